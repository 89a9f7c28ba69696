//! The shared documents ([`sighthub_storage::docs::Documents`]) on the Redis Cluster: the
//! runtime API keys, the console's session secret and revocations, and the peers added by
//! invitation, seen by every front end of the cluster.
//!
//! A document `name` is the hash `P d:{<name>}` (one slot), fields `v` (its version, a
//! decimal) and `b` (its JSON). A put is the [`PUT`] script, run with `EVALSHA`: it writes
//! only when `v` is still the version the writer read, so two front ends that change one
//! document at once never lose each other's change (the loser reads again and retries,
//! [`sighthub_storage::docs::Shared::edit`]). A put is acknowledged after `WAIT`, as a
//! sighting batch is ([`crate::RedisOptions::wait_replicas`]).

use crate::{run_on, slot, unavailable, wait_replicas};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Script};
use sighthub_storage::docs::{DocError, Documents, Versioned};
use std::time::Duration;

/// Compare-and-set of a document (`KEYS[1]`): writes `ARGV[2]` when the version is still
/// `ARGV[1]` (0: absent); the new version, or -1 when another writer changed it.
pub const PUT: &str = r"
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return -1 end
redis.call('HSET', KEYS[1], 'v', v + 1, 'b', ARGV[2])
return v + 1
";

/// The documents of one cluster (and key prefix).
#[derive(Clone)]
pub struct RedisDocuments {
    conn: ClusterConnection,
    handle: tokio::runtime::Handle,
    prefix: Vec<u8>,
    put: Script,
    timeout: Duration,
    wait: (u32, u64),
}

impl std::fmt::Debug for RedisDocuments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDocuments")
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .finish_non_exhaustive()
    }
}

impl RedisDocuments {
    pub(crate) fn new(
        conn: ClusterConnection,
        handle: tokio::runtime::Handle,
        prefix: &[u8],
        timeout: Duration,
        wait: (u32, u64),
    ) -> Self {
        Self {
            conn,
            handle,
            prefix: prefix.to_vec(),
            put: Script::new(PUT),
            timeout,
            wait,
        }
    }

    /// The key of document `name`.
    pub fn key(&self, name: &str) -> Vec<u8> {
        [&self.prefix, b"d:{".as_slice(), name.as_bytes(), b"}"].concat()
    }

    fn run<T: Send + 'static>(
        &self,
        name: &str,
        fut: impl std::future::Future<Output = sighthub_store::Result<T>> + Send + 'static,
    ) -> Result<T, DocError> {
        run_on(&self.handle, self.timeout, fut).map_err(|e| DocError::Unavailable {
            name: name.to_owned(),
            why: e.to_string(),
        })
    }
}

fn corrupt(name: &str, why: &str) -> DocError {
    DocError::Corrupt {
        name: name.to_owned(),
        why: why.to_owned(),
    }
}

impl Documents for RedisDocuments {
    fn get(&self, name: &str) -> Result<Option<Versioned>, DocError> {
        let (key, mut c) = (self.key(name), self.conn.clone());
        let (v, b): (Option<String>, Option<Vec<u8>>) = self.run(name, async move {
            redis::cmd("HMGET")
                .arg(key)
                .arg("v")
                .arg("b")
                .query_async(&mut c)
                .await
                .map_err(unavailable)
        })?;
        match (v, b) {
            (None, None) => Ok(None),
            (Some(v), Some(body)) => Ok(Some(Versioned {
                version: v.parse().map_err(|_| corrupt(name, "bad version"))?,
                body,
            })),
            _ => Err(corrupt(
                name,
                "a version without a body, or a body without one",
            )),
        }
    }

    fn version(&self, name: &str) -> Result<u64, DocError> {
        let (key, mut c) = (self.key(name), self.conn.clone());
        let v: Option<String> =
            self.run(
                name,
                async move { c.hget(key, "v").await.map_err(unavailable) },
            )?;
        v.map_or(Ok(0), |v| {
            v.parse().map_err(|_| corrupt(name, "bad version"))
        })
    }

    fn put(&self, name: &str, expected: u64, body: &[u8]) -> Result<Option<u64>, DocError> {
        let key = self.key(name);
        let s = slot(&key);
        let (script, conn, body) = (self.put.clone(), self.conn.clone(), body.to_vec());
        let (n, ms) = self.wait;
        let v: i64 = self.run(name, async move {
            let mut c = conn.clone();
            let mut inv = script.prepare_invoke();
            inv.key(key).arg(expected).arg(body);
            let v: i64 = inv.invoke_async(&mut c).await.map_err(unavailable)?;
            if v > 0 {
                wait_replicas(&conn, &[s], n, ms).await?;
            }
            Ok(v)
        })?;
        Ok(u64::try_from(v).ok())
    }

    fn shared(&self) -> bool {
        true
    }
}
