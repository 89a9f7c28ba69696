//! The sighting store's engine on a Redis Cluster: [`RedisEngine`] implements
//! [`sighthub_store::engine::Engine`], so the sighting rules ([`sighthub_store::Sightings`])
//! run unchanged over a cluster that several sighthub front ends share
//! (`[storage] backend = "redis"`). It speaks the Redis Cluster protocol only (Valkey,
//! Redis 7, Kvrocks): plain commands and `EVALSHA` scripts (loaded on `NOSCRIPT`), never
//! `FUNCTION`.
//!
//! The engine stores bytes: **no sighting rule is here**. Its two scripts only compare and
//! set a value's records ([`CAS`]) and add to namespace counts ([`COUNT`]).
//!
//! ## Key layout (`P` is the configured prefix, which holds no `{` or `}`)
//! - **Records** ([`Space::Sightings`], rules key `<ns> 0x00 <stored value>`):
//!   `P s:{<tag>}<ns> 0x00 <stored value>` → the encoded record, where `<tag>` is the hex of
//!   the first 128 bits of SHA-256 of the stored value. Every record of one value (each
//!   namespace holding it, `_all`, `_shadow/…`, `_expired/…`) is in one hash slot, so one
//!   script applies a value's group atomically. The tag only chooses the slot: the full
//!   namespace and value are in the key, so two values whose tags collide are two keys.
//! - **Namespace index**: `P n:{<tag of ns>}<ns>`, a sorted set of the namespace's stored
//!   values (score 0, read with `ZRANGEBYLEX`): listing, paging and delete. A member is added
//!   before its record is created and removed after its record is deleted, so a record is
//!   never missing from the index except in the window described below; a member without a
//!   record (a crash between the two) is skipped by scans.
//! - **Counts** ([`Space::Counts`]): the hash `P counts`, field `<ns>` → decimal count,
//!   changed only by increments ([`COUNT`]: `HINCRBY`, the field removed at zero).
//! - **Formats** ([`Space::Formats`]): the hash `P formats`, field `<ns>` → format tag.
//! - **Expiry index** ([`Space::Expiry`]): the sorted set `P expiry` of the rules' expiry
//!   keys (big-endian time first, so lexical order is time order).
//! - **Markers** ([`Space::Markers`]): `P m:<key>` → value; never scanned.
//! - **Leases**: `P lease:<name>` → holder id, with a expiry (`SET … PX`, [`LEASE`]).
//! - **Shared documents** ([`docs`]): `P d:{<name>}`, a hash of version and JSON (runtime
//!   keys, console sessions, runtime peers), replaced by compare-and-set.
//!
//! ## Applying a batch
//! In the order the seam's docs ask of a non-transactional engine: expiry insertions and
//! namespace index insertions (of records that did not exist when read), then every value
//! group as one [`CAS`] script in its slot (all of them sent at once: the client pipelines
//! them per node, no round trip per item), then for the groups that applied their count
//! increments, index removals and expiry removals, then formats, then the markers when no
//! group conflicted, then `WAIT` when `wait_replicas` > 0. A group whose records changed
//! since the rules layer read them is not written and is reported as a conflict; the rules
//! layer re-runs its operations on fresh reads.
//!
//! What a crash of a front end in the middle of a batch can leave (the cluster itself is
//! consistent per slot): an expiry entry or an index member without its record (skipped),
//! a value group applied without its count increments (`?count` and the namespace listing's
//! totals off by one per such value) and, with markers written last, a feeder batch applied
//! again after restart (at least once). One window between front ends: a value deleted by
//! one front end while another creates it again may end without its index member (it stays
//! readable and counted, and is not listed until written anew after a delete).
//!
//! ## Threads
//! The sighting rules are synchronous and run on blocking threads, plain threads (sweeper,
//! feeders) and, at start, the main thread. The engine owns a small tokio runtime of its own:
//! every call is spawned there and waited for on a standard channel, so no caller ever calls
//! a runtime's `block_on`, whatever thread it is on.

pub mod docs;

use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncCommands, RedisError, Script};
use sha2::{Digest, Sha256};
use sighthub_storage::Ticket;
use sighthub_store::engine::{Applied, Batch, Engine, Group, Space};
use sighthub_store::{Durability, Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::ops::{Bound, ControlFlow};
use std::time::Duration;

/// Compare-and-set of one value's records (all keys in one slot). `ARGV` has four entries
/// per key: the prior's kind (`u` unchecked, `a` absent, `v` these bytes), the prior bytes,
/// the write (`p` put, `d` delete) and the new bytes. Writes all or nothing; 1 when written,
/// 0 when a prior no longer holds.
pub const CAS: &str = r"
for i = 1, #KEYS do
  local kind = ARGV[4 * i - 3]
  if kind ~= 'u' then
    local cur = redis.call('GET', KEYS[i])
    if kind == 'a' then
      if cur then return 0 end
    elseif cur ~= ARGV[4 * i - 2] then
      return 0
    end
  end
end
for i = 1, #KEYS do
  if ARGV[4 * i - 1] == 'p' then
    redis.call('SET', KEYS[i], ARGV[4 * i])
  else
    redis.call('DEL', KEYS[i])
  end
end
return 1
";

/// Count increments on the counts hash (`KEYS[1]`): `ARGV` is pairs of field and delta; a
/// field whose count reaches zero (or less) is removed.
pub const COUNT: &str = r"
for i = 1, #ARGV, 2 do
  local n = redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return 1
";

/// A lease (`KEYS[1]`): taken when free or already ours (`ARGV[1]`), for `ARGV[2]` ms.
/// 1 when held, 0 when another holder has it.
pub const LEASE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// Members fetched per `ZRANGEBYLEX` page of a scan.
const SCAN_PAGE: usize = 512;

/// How to reach the cluster (`[storage.redis]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Seed nodes, `host:port` (the rest of the cluster is discovered).
    pub nodes: Vec<String>,
    /// Prefix of every key; lets several data sets share one cluster. No `{` or `}`.
    pub prefix: String,
    /// ACL user name (`AUTH <user> <password>`), if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// TLS to every node (verified against the system's roots).
    pub tls: bool,
    /// Replicas that must have each batch (`WAIT`) before it is acknowledged; 0: none.
    pub wait_replicas: u32,
    /// How long `WAIT` waits, in milliseconds.
    pub wait_timeout_ms: u64,
    /// Connection timeout, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Timeout of one call of the engine (all its commands), in milliseconds.
    pub response_timeout_ms: u64,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            prefix: "sighthub:".to_owned(),
            username: None,
            password: None,
            tls: false,
            wait_replicas: 1,
            wait_timeout_ms: 1_000,
            connect_timeout_ms: 2_000,
            response_timeout_ms: 5_000,
        }
    }
}

/// Why the engine cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The options are unusable.
    #[error("[storage.redis]: {0}")]
    Config(String),
    /// The cluster cannot be reached or refused us.
    #[error("cannot reach the Redis cluster at {nodes}: {why}")]
    Connect {
        /// The seed nodes tried.
        nodes: String,
        /// What went wrong.
        why: String,
    },
}

/// Checks a key prefix: no hash-tag braces (they would move every key to one slot), no
/// control characters, at most 64 bytes.
pub fn check_prefix(prefix: &str) -> std::result::Result<(), String> {
    if prefix.len() > 64 {
        return Err(format!("prefix is {} bytes; at most 64", prefix.len()));
    }
    if prefix.contains(['{', '}']) || prefix.chars().any(char::is_control) {
        return Err("prefix must not contain '{', '}' or control characters".to_owned());
    }
    Ok(())
}

/// The engine: a cluster connection (multiplexed, shared by every caller) and the runtime
/// that drives it. See the module docs.
pub struct RedisEngine {
    conn: ClusterConnection,
    prefix: Vec<u8>,
    cas: Script,
    count: Script,
    lease: Script,
    wait_replicas: u32,
    wait_timeout_ms: u64,
    timeout: Duration,
    /// Dropped with `shutdown_background` (never blocks, so dropping the engine is safe on
    /// any thread).
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .field("wait_replicas", &self.wait_replicas)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisEngine {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn unavailable(e: RedisError) -> Error {
    Error::Unavailable(format!("redis: {e}"))
}

impl RedisEngine {
    /// Connects to the cluster and checks it answers (a `PING` to every primary).
    pub fn open(opts: &RedisOptions) -> std::result::Result<Self, OpenError> {
        if opts.nodes.is_empty() {
            return Err(OpenError::Config(
                "nodes is empty: give the seed nodes".into(),
            ));
        }
        check_prefix(&opts.prefix).map_err(OpenError::Config)?;
        let scheme = if opts.tls { "rediss" } else { "redis" };
        let urls: Vec<String> = opts
            .nodes
            .iter()
            .map(|n| format!("{scheme}://{}", n.trim()))
            .collect();
        let connect_err = |why: String| OpenError::Connect {
            nodes: opts.nodes.join(","),
            why,
        };
        let mut b = ClusterClientBuilder::new(urls.clone())
            .connection_timeout(Duration::from_millis(opts.connect_timeout_ms.max(1)))
            .response_timeout(Duration::from_millis(opts.response_timeout_ms.max(1)))
            .retries(3);
        if let Some(u) = &opts.username {
            b = b.username(u);
        }
        if let Some(p) = &opts.password {
            b = b.password(p);
        }
        let client = b.build().map_err(|e| connect_err(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sighthub-redis")
            .enable_all()
            .build()
            .map_err(|e| connect_err(format!("starting the client runtime: {e}")))?;
        let timeout = Duration::from_millis(opts.response_timeout_ms.max(1));
        let connect = async move {
            let mut conn = client.get_async_connection().await?;
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok::<_, RedisError>(conn)
        };
        // Spawned and waited for on a channel, not `block_on`: `open` may be called on a
        // thread that runs another runtime.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let r = match tokio::time::timeout(timeout.saturating_mul(2), connect).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            };
            let _ = tx.send(r);
        });
        let conn = match rx
            .recv()
            .map_err(|_| "the client runtime stopped".to_owned())
            .and_then(|r| r)
        {
            Ok(c) => c,
            Err(why) => {
                rt.shutdown_background();
                return Err(connect_err(why));
            }
        };
        Ok(Self {
            conn,
            prefix: opts.prefix.as_bytes().to_vec(),
            cas: Script::new(CAS),
            count: Script::new(COUNT),
            lease: Script::new(LEASE),
            wait_replicas: opts.wait_replicas,
            wait_timeout_ms: opts.wait_timeout_ms,
            timeout,
            rt: Some(rt),
        })
    }

    /// Runs `f` on the engine's runtime and waits for it on this thread (any thread).
    fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(ClusterConnection) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.run_sized(0, f)
    }

    /// [`RedisEngine::run`] for a call of `commands` commands: its deadline is the response
    /// timeout plus 1 ms per command, so a large bulk request is not cut for its size.
    fn run_sized<T, F, Fut>(&self, commands: usize, f: F) -> Result<T>
    where
        F: FnOnce(ClusterConnection) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| Error::Unavailable("redis engine closed".into()))?;
        let timeout = self
            .timeout
            .saturating_add(Duration::from_millis(commands as u64));
        run_on(rt.handle(), timeout, f(self.conn.clone()))
    }

    /// The shared documents of this cluster ([`docs::RedisDocuments`]), over the engine's
    /// connection and runtime (they fail as unavailable once the engine is dropped).
    pub fn documents(&self) -> Result<docs::RedisDocuments> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| Error::Unavailable("redis engine closed".into()))?;
        Ok(docs::RedisDocuments::new(
            self.conn.clone(),
            rt.handle().clone(),
            &self.prefix,
            self.timeout,
            (self.wait_replicas, self.wait_timeout_ms),
        ))
    }

    fn key(&self, kind: &[u8], rest: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + kind.len() + rest.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(kind);
        k.extend_from_slice(rest);
        k
    }

    /// `P s:{<tag of value>}<ns> 0x00 <value>` for the rules' record key `<ns> 0x00 <value>`.
    fn record_key(&self, skey: &[u8]) -> Vec<u8> {
        let value = split(skey).map_or(skey, |(_, v)| v);
        let mut k = self.key(b"s:{", tag(value).as_bytes());
        k.push(b'}');
        k.extend_from_slice(skey);
        k
    }

    /// `P n:{<tag of ns>}<ns>`: the namespace's index.
    fn index_key(&self, ns: &[u8]) -> Vec<u8> {
        let mut k = self.key(b"n:{", tag(ns).as_bytes());
        k.push(b'}');
        k.extend_from_slice(ns);
        k
    }

    fn hash_key(&self, space: Space) -> Vec<u8> {
        match space {
            Space::Counts => self.key(b"counts", b""),
            Space::Formats => self.key(b"formats", b""),
            _ => self.key(b"expiry", b""),
        }
    }

    fn marker_key(&self, key: &[u8]) -> Vec<u8> {
        self.key(b"m:", key)
    }
}

/// Runs `fut` on the runtime of `handle` and waits for it on this thread (any thread: never
/// `block_on`), for at most `timeout`.
fn run_on<T, Fut>(handle: &tokio::runtime::Handle, timeout: Duration, fut: Fut) -> Result<T>
where
    Fut: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let r = match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unavailable(format!(
                "redis: no answer within {} ms",
                timeout.as_millis()
            ))),
        };
        let _ = tx.send(r);
    });
    rx.recv()
        .map_err(|_| Error::Unavailable("redis engine stopped".into()))?
}

/// `WAIT` for `n` replicas (at most `ms` milliseconds) on the primaries of `slots` (on every
/// primary when they are more than [`WAIT_SLOTS`]): the one rule of what a write waits for
/// before it is acknowledged. Unavailable when fewer replicas have it.
async fn wait_replicas(conn: &ClusterConnection, slots: &[u16], n: u32, ms: u64) -> Result<()> {
    if n == 0 || slots.is_empty() {
        return Ok(());
    }
    let wait = || {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(n).arg(ms);
        cmd
    };
    let got: Vec<i64> = if slots.len() > WAIT_SLOTS {
        let mut c = conn.clone();
        vec![wait().query_async(&mut c).await.map_err(unavailable)?]
    } else {
        all(slots
            .iter()
            .map(|s| {
                let mut c = conn.clone();
                let cmd = wait();
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(*s, SlotAddr::Master),
                ));
                async move {
                    let v = c.route_command(cmd, route).await?;
                    Ok(redis::from_redis_value::<i64>(v)?)
                }
            })
            .collect())
        .await?
    };
    let got = got.into_iter().min().unwrap_or(0);
    if got < i64::from(n) {
        return Err(Error::Unavailable(format!(
            "the write reached {got} replica(s) within {ms} ms, not the {n} wait_replicas \
             asks (a primary without a replica, after a failover?); it may be lost by a \
             failover"
        )));
    }
    Ok(())
}

/// The cluster slot of a key: CRC16 (XMODEM) of its hash tag (the bytes between the first
/// `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = key.get(open + 1..)?;
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| rest.get(..close)).flatten()
    });
    let mut crc: u16 = 0;
    for &b in tagged.unwrap_or(key) {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// Most distinct slots a batch waits on one by one; a batch over more slots waits on every
/// primary at once.
const WAIT_SLOTS: usize = 16;

/// Hex of the first 128 bits of SHA-256: a hash tag that never contains braces and is never
/// empty.
fn tag(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    hex::encode(d.get(..16).unwrap_or_default())
}

/// `<ns> 0x00 <value>` → (ns, value).
fn split(k: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = k.iter().position(|&b| b == 0)?;
    Some((k.get(..i)?, k.get(i + 1..)?))
}

fn decimal_to_le(v: &[u8]) -> Vec<u8> {
    let n: u64 = std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .map_or(0, |n| u64::try_from(n).unwrap_or(0));
    n.to_le_bytes().to_vec()
}

/// A `ZRANGEBYLEX` bound from a key bound (`-`/`+` when unbounded).
fn lex(b: Bound<&[u8]>, low: bool) -> Vec<u8> {
    match b {
        Bound::Included(k) => [b"[".as_slice(), k].concat(),
        Bound::Excluded(k) => [b"(".as_slice(), k].concat(),
        Bound::Unbounded if low => b"-".to_vec(),
        Bound::Unbounded => b"+".to_vec(),
    }
}

fn in_range(k: &[u8], start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    let lo = match start {
        Bound::Included(s) => k >= s,
        Bound::Excluded(s) => k > s,
        Bound::Unbounded => true,
    };
    let hi = match end {
        Bound::Included(e) => k <= e,
        Bound::Excluded(e) => k < e,
        Bound::Unbounded => true,
    };
    lo && hi
}

/// The CAS script's arguments for a group.
fn cas_args(g: &Group) -> Vec<Vec<u8>> {
    let mut args = Vec::with_capacity(g.records.len() * 4);
    for r in &g.records {
        match &r.prior {
            None => {
                args.push(b"u".to_vec());
                args.push(Vec::new());
            }
            Some(None) => {
                args.push(b"a".to_vec());
                args.push(Vec::new());
            }
            Some(Some(v)) => {
                args.push(b"v".to_vec());
                args.push(v.clone());
            }
        }
        match &r.value {
            Some(v) => {
                args.push(b"p".to_vec());
                args.push(v.clone());
            }
            None => {
                args.push(b"d".to_vec());
                args.push(Vec::new());
            }
        }
    }
    args
}

/// Commands in flight at once per engine call: the client pipelines them per node; more
/// would queue behind each other past the per-command response timeout.
const IN_FLIGHT: usize = 256;

/// Runs the futures, [`IN_FLIGHT`] at a time (the client pipelines them per node), in order,
/// and keeps the first error.
async fn all<T>(futs: Vec<impl Future<Output = redis::RedisResult<T>>>) -> Result<Vec<T>> {
    use futures_util::stream::{self, StreamExt};
    stream::iter(futs)
        .buffered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|r| r.map_err(unavailable))
        .collect()
}

impl Engine for RedisEngine {
    type Value = Vec<u8>;

    fn checks_priors(&self) -> bool {
        true
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match space {
            Space::Sightings | Space::Markers => {
                let k = if space == Space::Sightings {
                    self.record_key(key)
                } else {
                    self.marker_key(key)
                };
                self.run(|mut c| async move {
                    c.get::<_, Option<Vec<u8>>>(k).await.map_err(unavailable)
                })
            }
            Space::Counts | Space::Formats => {
                let h = self.hash_key(space);
                let field = key.to_vec();
                let v = self.run(|mut c| async move {
                    c.hget::<_, _, Option<Vec<u8>>>(h, field)
                        .await
                        .map_err(unavailable)
                })?;
                Ok(match space {
                    Space::Counts => v.map(|v| decimal_to_le(&v)),
                    _ => v,
                })
            }
            Space::Expiry => {
                let z = self.hash_key(space);
                let m = key.to_vec();
                let s = self.run(|mut c| async move {
                    c.zscore::<_, _, Option<f64>>(z, m)
                        .await
                        .map_err(unavailable)
                })?;
                Ok(s.map(|_| Vec::new()))
            }
        }
    }

    fn get_many(&self, space: Space, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        if space != Space::Sightings {
            return keys.iter().map(|k| self.get(space, k)).collect();
        }
        let rkeys: Vec<Vec<u8>> = keys.iter().map(|k| self.record_key(k)).collect();
        // All at once: the client pipelines them per node.
        self.run_sized(rkeys.len(), move |conn| async move {
            all(rkeys
                .into_iter()
                .map(|k| {
                    let mut c = conn.clone();
                    async move { c.get::<_, Option<Vec<u8>>>(k).await }
                })
                .collect())
            .await
        })
    }

    fn apply(&self, batch: Batch) -> Result<Applied> {
        if batch.is_empty() {
            return Ok(Applied {
                ticket: Ticket::NONE,
                conflicts: Vec::new(),
            });
        }
        let expiry = self.hash_key(Space::Expiry);
        let counts = self.hash_key(Space::Counts);
        let formats = self.hash_key(Space::Formats);
        // Index insertions of records created by this batch, removals of records it deletes.
        let mut index_add: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
        let mut index_del: Vec<(usize, Vec<u8>, Vec<u8>)> = Vec::new();
        let mut groups = Vec::with_capacity(batch.groups.len());
        for (gi, g) in batch.groups.iter().enumerate() {
            let mut keys = Vec::with_capacity(g.records.len());
            for r in &g.records {
                keys.push(self.record_key(&r.key));
                let Some((ns, value)) = split(&r.key) else {
                    continue;
                };
                let existed = !matches!(r.prior, Some(None));
                let exists = r.value.is_some();
                if exists && !matches!(r.prior, Some(Some(_))) {
                    index_add
                        .entry(self.index_key(ns))
                        .or_default()
                        .push(value.to_vec());
                } else if !exists && existed {
                    index_del.push((gi, self.index_key(ns), value.to_vec()));
                }
            }
            groups.push((keys, cas_args(g)));
        }
        let cas = self.cas.clone();
        let count = self.count.clone();
        let marker_keys: Vec<(Vec<u8>, Vec<u8>)> = batch
            .markers
            .iter()
            .map(|(k, v)| (self.marker_key(k), v.clone()))
            .collect();
        let (wait_n, wait_ms) = (self.wait_replicas, self.wait_timeout_ms);
        let commands = groups.len()
            + index_add.values().map(Vec::len).sum::<usize>()
            + index_del.len()
            + marker_keys.len()
            + batch.expiry_added.len();
        // The slots this batch writes: `WAIT` asks their primaries only, so a failover
        // elsewhere in the cluster does not hold these writes up.
        let mut slots: Vec<u16> = Vec::new();
        if wait_n > 0 {
            slots.extend(
                groups
                    .iter()
                    .filter_map(|(keys, _)| keys.first().map(|k| slot(k))),
            );
            slots.extend(index_add.keys().map(|k| slot(k)));
            slots.extend(index_del.iter().map(|(_, k, _)| slot(k)));
            slots.extend(marker_keys.iter().map(|(k, _)| slot(k)));
            for (present, key) in [
                (!batch.expiry_added.is_empty(), &expiry),
                (
                    batch.groups.iter().any(|g| !g.expiry_removed.is_empty()),
                    &expiry,
                ),
                (batch.groups.iter().any(|g| !g.counts.is_empty()), &counts),
                (!batch.formats.is_empty(), &formats),
            ] {
                if present {
                    slots.push(slot(key));
                }
            }
            slots.sort_unstable();
            slots.dedup();
        }
        self.run_sized(commands, move |conn| async move {
            // 1. Expiry and index insertions, before any record.
            let mut sets: Vec<(&[u8], &[Vec<u8>])> = batch
                .expiry_added
                .chunks(SCAN_PAGE)
                .map(|c| (expiry.as_slice(), c))
                .collect();
            for (z, members) in &index_add {
                sets.extend(members.chunks(SCAN_PAGE).map(|c| (z.as_slice(), c)));
            }
            let adds: Vec<_> = sets
                .into_iter()
                .map(|(z, chunk)| {
                    let members: Vec<(u8, &[u8])> =
                        chunk.iter().map(|m| (0, m.as_slice())).collect();
                    let mut c = conn.clone();
                    async move { c.zadd_multiple::<_, _, _, i64>(z, &members).await }
                })
                .collect();
            all(adds).await?;
            // 2. Each value group, compare-and-set in its slot, all at once.
            let results = all(groups
                .iter()
                .map(|(keys, args)| {
                    let mut c = conn.clone();
                    let mut inv = cas.prepare_invoke();
                    for k in keys {
                        inv.key(k.as_slice());
                    }
                    for a in args {
                        inv.arg(a.as_slice());
                    }
                    async move { inv.invoke_async::<i64>(&mut c).await }
                })
                .collect())
            .await?;
            let applied: Vec<bool> = results.iter().map(|r| *r == 1).collect();
            let conflicts: Vec<Vec<u8>> = batch
                .groups
                .iter()
                .zip(&applied)
                .filter(|(_, ok)| !**ok)
                .map(|(g, _)| g.value.clone())
                .collect();
            // 3. What goes with the applied groups: counts, index and expiry removals.
            let mut deltas: BTreeMap<&[u8], i64> = BTreeMap::new();
            let mut expiry_del: Vec<&[u8]> = Vec::new();
            for (g, _) in batch.groups.iter().zip(&applied).filter(|(_, ok)| **ok) {
                for (ns, d) in &g.counts {
                    let e = deltas.entry(ns.as_slice()).or_insert(0);
                    *e = e.saturating_add(*d);
                }
                expiry_del.extend(g.expiry_removed.iter().map(Vec::as_slice));
            }
            let mut after = Vec::new();
            let deltas: Vec<(&[u8], i64)> = deltas.into_iter().filter(|(_, d)| *d != 0).collect();
            if !deltas.is_empty() {
                let mut c = conn.clone();
                let mut inv = count.prepare_invoke();
                inv.key(counts.as_slice());
                for (ns, d) in &deltas {
                    inv.arg(*ns).arg(*d);
                }
                after.push(
                    Box::pin(async move { inv.invoke_async::<i64>(&mut c).await })
                        as std::pin::Pin<Box<dyn Future<Output = redis::RedisResult<i64>> + Send>>,
                );
            }
            for (gi, z, m) in &index_del {
                if applied.get(*gi).copied().unwrap_or(false) {
                    let mut c = conn.clone();
                    after.push(Box::pin(async move {
                        c.zrem::<_, _, i64>(z, m.as_slice()).await
                    }));
                }
            }
            for chunk in expiry_del.chunks(SCAN_PAGE) {
                let mut c = conn.clone();
                let z = expiry.clone();
                let chunk = chunk.to_vec();
                after.push(Box::pin(async move { c.zrem::<_, _, i64>(z, chunk).await }));
            }
            for (ns, v) in &batch.formats {
                let mut c = conn.clone();
                let h = formats.clone();
                after.push(match v {
                    Some(v) => Box::pin(async move {
                        c.hset::<_, _, _, i64>(h, ns.as_slice(), v.as_slice()).await
                    }),
                    None => Box::pin(async move { c.hdel::<_, _, i64>(h, ns.as_slice()).await }),
                });
            }
            all(after).await?;
            // 4. Markers last, and only when every group applied.
            if conflicts.is_empty() && !marker_keys.is_empty() {
                all(marker_keys
                    .iter()
                    .map(|(k, v)| {
                        let mut c = conn.clone();
                        async move { c.set::<_, _, ()>(k.as_slice(), v.as_slice()).await }
                    })
                    .collect())
                .await?;
            }
            // 5. Replicas, before the batch is acknowledged.
            wait_replicas(&conn, &slots, wait_n, wait_ms).await?;
            Ok(Applied {
                ticket: Ticket::NONE,
                conflicts,
            })
        })
    }

    fn scan<F>(
        &self,
        space: Space,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        mut visit: F,
    ) -> Result<()>
    where
        F: FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    {
        match space {
            Space::Markers => Err(Error::Corrupt("markers are never scanned")),
            Space::Counts | Space::Formats => {
                let h = self.hash_key(space);
                let all: BTreeMap<Vec<u8>, Vec<u8>> = self.run(|mut c| async move {
                    c.hgetall::<_, BTreeMap<Vec<u8>, Vec<u8>>>(h)
                        .await
                        .map_err(unavailable)
                })?;
                for (k, v) in all
                    .iter()
                    .filter(|(k, _)| in_range(k, start, end))
                    .take(limit)
                {
                    let v = if space == Space::Counts {
                        decimal_to_le(v)
                    } else {
                        v.clone()
                    };
                    if visit(k, &v)?.is_break() {
                        break;
                    }
                }
                Ok(())
            }
            Space::Expiry => {
                let z = self.hash_key(space);
                let mut min = lex(start, true);
                let max = lex(end, false);
                let mut left = limit;
                while left > 0 {
                    let n = left.min(SCAN_PAGE);
                    let (z, lo, hi) = (z.clone(), min.clone(), max.clone());
                    let page: Vec<Vec<u8>> = self.run(move |mut c| async move {
                        c.zrangebylex_limit::<_, _, _, Vec<Vec<u8>>>(z, lo, hi, 0, n as isize)
                            .await
                            .map_err(unavailable)
                    })?;
                    for m in &page {
                        if visit(m, &[])?.is_break() {
                            return Ok(());
                        }
                    }
                    match page.last() {
                        Some(last) if page.len() == n => {
                            min = [b"(".as_slice(), last].concat();
                            left -= n;
                        }
                        _ => return Ok(()),
                    }
                }
                Ok(())
            }
            Space::Sightings => self.scan_records(start, end, limit, visit),
        }
    }

    fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool> {
        let key = self.key(b"lease:", name.as_bytes());
        let (holder, script) = (holder.to_owned(), self.lease.clone());
        self.run(move |mut c| async move {
            let mut inv = script.prepare_invoke();
            inv.key(key).arg(holder).arg(ttl_ms.max(1));
            inv.invoke_async::<i64>(&mut c)
                .await
                .map(|n| n == 1)
                .map_err(unavailable)
        })
    }

    fn durability(&self) -> Durability<'_> {
        // A batch is durable as the cluster's settings make it when `apply` returns
        // (appendfsync, and WAIT when configured): nothing more to wait for.
        Durability::immediate()
    }

    fn close(&self) -> Result<()> {
        Ok(())
    }
}

impl RedisEngine {
    /// A scan of records, within one namespace (the rules only scan one namespace's range):
    /// the namespace's index in pages, then the records of each page at once.
    fn scan_records<F>(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        mut visit: F,
    ) -> Result<()>
    where
        F: FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    {
        let start_key = match start {
            Bound::Included(k) | Bound::Excluded(k) => k,
            Bound::Unbounded => {
                return Err(Error::Corrupt("a record scan needs a namespace"));
            }
        };
        let (ns, from) = split(start_key).ok_or(Error::Corrupt("record scan start"))?;
        let ns = ns.to_vec();
        let mut min = match start {
            Bound::Included(_) if from.is_empty() => b"-".to_vec(),
            Bound::Included(_) => [b"[".as_slice(), from].concat(),
            _ => [b"(".as_slice(), from].concat(),
        };
        // The end: the namespace's end (`<ns> 0x01`), or a key inside it.
        let max = match end {
            Bound::Included(k) | Bound::Excluded(k) => match split(k) {
                Some((e_ns, v)) if e_ns == ns.as_slice() => {
                    let b = if matches!(end, Bound::Included(_)) {
                        b"["
                    } else {
                        b"("
                    };
                    [b.as_slice(), v].concat()
                }
                _ => b"+".to_vec(),
            },
            Bound::Unbounded => b"+".to_vec(),
        };
        let index = self.index_key(&ns);
        let mut left = limit;
        while left > 0 {
            let n = left.min(SCAN_PAGE);
            let (z, lo, hi) = (index.clone(), min.clone(), max.clone());
            let members: Vec<Vec<u8>> = self.run(move |mut c| async move {
                c.zrangebylex_limit::<_, _, _, Vec<Vec<u8>>>(z, lo, hi, 0, n as isize)
                    .await
                    .map_err(unavailable)
            })?;
            let skeys: Vec<Vec<u8>> = members
                .iter()
                .map(|m| [ns.as_slice(), &[0], m.as_slice()].concat())
                .collect();
            let rkeys: Vec<Vec<u8>> = skeys.iter().map(|k| self.record_key(k)).collect();
            let records: Vec<Option<Vec<u8>>> = self.run(move |conn| async move {
                all(rkeys
                    .into_iter()
                    .map(|k| {
                        let mut c = conn.clone();
                        async move { c.get::<_, Option<Vec<u8>>>(k).await }
                    })
                    .collect())
                .await
            })?;
            for (k, r) in skeys.iter().zip(&records) {
                // A member without a record: a crash between the two writes; skipped.
                if let Some(r) = r {
                    if visit(k, r)?.is_break() {
                        return Ok(());
                    }
                }
            }
            match members.last() {
                Some(last) if members.len() == n => {
                    min = [b"(".as_slice(), last].concat();
                    left -= n;
                }
                _ => return Ok(()),
            }
        }
        Ok(())
    }
}

/// The sighting store on a Redis Cluster.
pub type RedisStore = sighthub_store::Sightings<RedisEngine>;

/// Opens the sighting store on the cluster `opts` names.
pub fn open_store(
    opts: &RedisOptions,
    store: sighthub_store::StoreOptions,
) -> std::result::Result<RedisStore, OpenError> {
    let engine = RedisEngine::open(opts)?;
    sighthub_store::Sightings::new(engine, store).map_err(|e| OpenError::Connect {
        nodes: opts.nodes.join(","),
        why: e.to_string(),
    })
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn tags_are_hex_without_braces_and_records_of_a_value_share_one() {
        let t = tag(b"{}");
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(tag(b""), tag(b"x"));
        assert!(check_prefix("a{b").is_err());
        assert!(check_prefix("sighthub:").is_ok());
    }

    #[test]
    fn slots_are_the_clusters() {
        // Known values of the Redis Cluster specification.
        assert_eq!(slot(b"123456789"), 0x31c3);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        // An empty tag `{}` hashes the whole key.
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_ne!(slot(b"{a}x"), slot(b"{b}x"));
    }

    #[test]
    fn lex_bounds_and_ranges() {
        assert_eq!(lex(Bound::Unbounded, true), b"-");
        assert_eq!(lex(Bound::Included(b"a"), true), b"[a");
        assert_eq!(lex(Bound::Excluded(b"a"), false), b"(a");
        assert!(in_range(b"b", Bound::Excluded(b"a"), Bound::Excluded(b"c")));
        assert!(!in_range(
            b"c",
            Bound::Excluded(b"a"),
            Bound::Excluded(b"c")
        ));
        assert_eq!(decimal_to_le(b"7"), 7u64.to_le_bytes());
        assert_eq!(decimal_to_le(b"-1"), 0u64.to_le_bytes());
    }
}
