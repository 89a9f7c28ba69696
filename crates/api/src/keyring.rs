//! The key ring: the one place that answers "who is this `Authorization` header?" for both
//! APIs, over two layers of keys.
//!
//! - **Configuration keys**: the `[acl]` keys and the admin key of the sighting API
//!   ([`Auth`]), and the exchange's `[exchange.keys]` (held by the exchange, looked up through
//!   it). SIGHUP replaces both ([`KeyRing::set_config`], `Exchange::set_keys`).
//! - **Runtime keys**, made by the admin API (`/_api/keys`): each may hold a sighting grant
//!   (SightingDB's syntax, `"rw:feeds/misp"`), an exchange grant (the fields of an
//!   `[exchange.keys]` entry), or be a single-use invitation (`/_api/peers/invite`). They are
//!   the shared document [`KEYS_DOCUMENT`] ([`sighthub_storage::docs`]): `<data_dir>/keys.json`
//!   (mode 0600) on the embedded backend, the cluster on the Redis backend (every front end
//!   sees them). Keys are kept as SHA-256 digests, never in clear; every change is written
//!   durably, by compare-and-set on the document's version, before it is answered, and is
//!   effective for the next request on this front end, without a restart, and on the other
//!   front ends within [`sighthub_storage::docs::REFRESH`] ([`KeyRing::refresh`]).
//!
//! Lookups read an immutable table behind a lock held only to clone an `Arc`; a change or a
//! refresh builds a new table and swaps it. A configuration key is looked up first: a
//! runtime key may not repeat one.

use crate::auth::digest;
use crate::auth::{Auth, KeyGrants, OwnedCaller};
use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sighthub_exchange::access::{credentials, Grants, Keys};
use sighthub_exchange::KeyConfig;
use sighthub_storage::docs::{DocError, Documents, Shared};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The shared document of the runtime keys (`<data_dir>/keys.json` on the embedded backend).
pub const KEYS_DOCUMENT: &str = "keys";
/// At most this many runtime keys (invitations included).
pub const MAX_RUNTIME_KEYS: usize = 10_000;
/// Longest key name.
pub const MAX_NAME_CHARS: usize = 64;
/// Shortest and longest key an operator may give (generated keys are 64 hex characters).
pub const GIVEN_KEY_CHARS: (usize, usize) = (16, 256);
/// How long an invitation is valid unless asked otherwise (7 days), and at most (30 days).
pub const INVITATION_SECONDS: (i64, i64) = (7 * 86_400, 30 * 86_400);

/// One runtime key as stored and listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// Public id (`k-` and 12 hex digits), names the key in the admin API and logs.
    pub id: String,
    /// What the operator called it.
    pub name: String,
    /// SHA-256 of the key, hex. Not listed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// Unix seconds.
    pub created: i64,
    /// Sighting API grant, SightingDB's syntax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sightings: Option<String>,
    /// Exchange grant: the fields of an `[exchange.keys]` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<Value>,
    /// A single-use invitation to peer (`/_api/peers/invite`), redeemed by
    /// `POST /iep04/peers/redeem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation: Option<InvitationRecord>,
}

/// What an invitation key remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvitationRecord {
    /// Unix seconds after which it is refused.
    pub expires: i64,
}

/// The document: its format's version (1) and the keys.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    version: u32,
    keys: Vec<KeyRecord>,
}

/// A runtime key, parsed for lookups.
#[derive(Debug)]
struct Entry {
    id: String,
    sightings: Option<KeyGrants>,
    exchange: Option<Arc<Grants>>,
    invitation: Option<InvitationRecord>,
}

/// Fields of a new key or of a change (`PATCH`): `None` = absent; `Some(Value::Null)` =
/// remove that grant.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// Name (required on creation).
    #[serde(default)]
    pub name: Option<String>,
    /// A key chosen by the operator (creation only); generated when absent.
    #[serde(default)]
    pub key: Option<String>,
    /// Sighting grant (`"rw:feeds/misp, r:shared"`), or null.
    #[serde(default, deserialize_with = "present")]
    pub sightings: Option<Value>,
    /// Exchange grant (`{"org": …, "publish": […], "read": […], "tlp_max": …}`), or null.
    #[serde(default, deserialize_with = "present")]
    pub exchange: Option<Value>,
}

/// Tells a field sent as `null` (remove) from a field not sent.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The runtime keys' lookup table.
type Table = HashMap<[u8; 32], Arc<Entry>>;

/// The key ring. See the module docs.
#[derive(Debug)]
pub struct KeyRing {
    config: RwLock<Arc<Auth>>,
    /// The table, and the copy of the document it was built from.
    runtime: RwLock<(Arc<KeyFile>, Arc<Table>)>,
    doc: Option<Shared<KeyFile>>,
    /// Orders the table's rebuilds (an edit's and a refresh's), so the last one built from
    /// the latest copy stays.
    sync: std::sync::Mutex<()>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// `n` random bytes, hex.
pub fn random_hex(n: usize) -> Result<String, ApiError> {
    sighthub_storage::secret::random_hex(n)
        .map_err(|_| ApiError::Internal("no randomness for a key"))
}

/// The exchange grants of a stored exchange field.
fn exchange_grants(v: &Value) -> Result<Grants, String> {
    let kc: KeyConfig =
        serde_json::from_value(v.clone()).map_err(|e| format!("exchange grant: {e}"))?;
    Ok(Grants::of_key(&kc))
}

fn sighting_grants(v: &Value) -> Result<String, String> {
    let s = v
        .as_str()
        .ok_or("sightings grant: a string such as \"rw:feeds/misp, r\"")?;
    KeyGrants::parse(s).map_err(|e| format!("sightings grant: {e}"))?;
    Ok(s.trim().to_owned())
}

impl Entry {
    fn of(r: &KeyRecord) -> Result<Entry, String> {
        Ok(Entry {
            id: r.id.clone(),
            sightings: r
                .sightings
                .as_deref()
                .map(KeyGrants::parse)
                .transpose()
                .map_err(|e| format!("sightings grant: {e}"))?,
            exchange: r
                .exchange
                .as_ref()
                .map(exchange_grants)
                .transpose()?
                .map(Arc::new),
            invitation: r.invitation.clone(),
        })
    }
}

/// A key ring that cannot start: its document cannot be read, or is not one sighthub wrote.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// The document cannot be read.
    #[error("runtime API keys: {0}")]
    Document(#[from] DocError),
    /// A key in it is invalid.
    #[error("runtime API keys: {0}; restore them from a backup, or remove them to start without runtime keys")]
    Invalid(String),
}

fn table(records: &[KeyRecord]) -> Result<Table, String> {
    let mut t = HashMap::with_capacity(records.len());
    for r in records {
        let d = unhex(&r.digest).ok_or_else(|| format!("key {}: bad digest", r.id))?;
        let e = Entry::of(r).map_err(|e| format!("key {}: {e}", r.id))?;
        t.insert(d, Arc::new(e));
    }
    Ok(t)
}

impl KeyRing {
    /// A ring over the configuration keys `config`, with the runtime keys of the shared
    /// documents `docs` (none, and none can be made, without them).
    pub fn open(config: Auth, docs: Option<Arc<dyn Documents>>) -> Result<KeyRing, KeyRingError> {
        let doc = docs
            .map(|d| Shared::<KeyFile>::open(d, KEYS_DOCUMENT))
            .transpose()?;
        let (file, t) = match &doc {
            Some(d) => {
                let f = d.current().1;
                let t = table(&f.keys).map_err(KeyRingError::Invalid)?;
                (f, t)
            }
            None => (Arc::new(KeyFile::default()), HashMap::new()),
        };
        Ok(KeyRing {
            config: RwLock::new(Arc::new(config)),
            runtime: RwLock::new((file, Arc::new(t))),
            doc,
            sync: std::sync::Mutex::new(()),
        })
    }

    /// Only configuration keys (tests, and servers without a data directory).
    pub fn of(config: Auth) -> KeyRing {
        KeyRing {
            config: RwLock::new(Arc::new(config)),
            runtime: RwLock::new((Arc::new(KeyFile::default()), Arc::new(HashMap::new()))),
            doc: None,
            sync: std::sync::Mutex::new(()),
        }
    }

    /// Whether other front ends share the runtime keys (then call [`KeyRing::refresh`] every
    /// [`sighthub_storage::docs::REFRESH`]).
    pub fn is_shared(&self) -> bool {
        self.doc.as_ref().is_some_and(Shared::is_shared)
    }

    /// Picks up the changes other front ends made; `true` when the table changed. A
    /// document that no longer builds a table (a key another version wrote) keeps the
    /// current table, and is an error.
    pub fn refresh(&self) -> Result<bool, KeyRingError> {
        let Some(doc) = &self.doc else {
            return Ok(false);
        };
        doc.refresh()?;
        self.sync_table()
    }

    /// Rebuilds the table when the document's cached copy is not the one it was built from.
    fn sync_table(&self) -> Result<bool, KeyRingError> {
        let Some(doc) = &self.doc else {
            return Ok(false);
        };
        let _s = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        let file = doc.current().1;
        if Arc::ptr_eq(
            &file,
            &self.runtime.read().unwrap_or_else(|p| p.into_inner()).0,
        ) {
            return Ok(false);
        }
        let t = table(&file.keys).map_err(KeyRingError::Invalid)?;
        *self.runtime.write().unwrap_or_else(|p| p.into_inner()) = (file, Arc::new(t));
        Ok(true)
    }

    /// Replaces the configuration keys (SIGHUP); runtime keys stay.
    pub fn set_config(&self, config: Auth) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    fn config(&self) -> Arc<Auth> {
        Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn runtime(&self) -> Arc<Table> {
        Arc::clone(&self.runtime.read().unwrap_or_else(|p| p.into_inner()).1)
    }

    /// The runtime key named by the header, if any (each credential form is tried).
    fn runtime_entry(&self, header: Option<&[u8]>) -> Option<Arc<Entry>> {
        let text = std::str::from_utf8(header?).ok()?.trim();
        let rt = self.runtime();
        if rt.is_empty() {
            return None;
        }
        credentials(text)
            .iter()
            .find_map(|k| rt.get(&digest(k)))
            .map(Arc::clone)
    }

    /// The caller of a sighting route: a configuration key, else a runtime key with a
    /// sighting grant, else an unknown key (refused by the route's check, 403).
    pub fn sightings_caller(&self, header: Option<&[u8]>) -> Result<OwnedCaller, ApiError> {
        let config = self.config();
        let caller = config.caller(header)?.clone_owned(&config);
        if !caller.is_unknown() {
            return Ok(caller);
        }
        Ok(match self.runtime_entry(header) {
            Some(e) => OwnedCaller::key(e.sightings.clone()),
            None => caller,
        })
    }

    /// The caller of an `/iep04/` route: an exchange configuration key (or the admin key),
    /// else a runtime key with an exchange grant; otherwise the exchange's own refusal.
    pub fn exchange_caller(
        &self,
        keys: &Keys,
        header: Option<&[u8]>,
    ) -> Result<Arc<Grants>, ApiError> {
        match keys.caller(header) {
            Ok(g) => Ok(g),
            Err(sighthub_exchange::Error::Forbidden(why)) => self
                .runtime_entry(header)
                .and_then(|e| e.exchange.clone())
                .ok_or(ApiError::Denied(why)),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether authentication is on.
    pub fn is_enabled(&self) -> bool {
        self.config().is_enabled()
    }

    /// Every runtime key, without digests: the latest list (the other front ends' changes
    /// are read first when they share it).
    pub fn list(&self) -> Result<Vec<KeyRecord>, ApiError> {
        let Some(doc) = &self.doc else {
            return Ok(Vec::new());
        };
        if doc.is_shared() {
            self.refresh()
                .map_err(|e| ApiError::Backend(e.to_string()))?;
        }
        Ok(doc
            .current()
            .1
            .keys
            .iter()
            .map(|r| KeyRecord {
                digest: String::new(),
                ..r.clone()
            })
            .collect())
    }

    /// Applies `change` to the latest records and writes them back (a compare-and-set on
    /// the shared document), then makes them the table. Nothing changes when any step
    /// fails; `change` may run again when another front end changed the keys meanwhile.
    fn edit<T>(
        &self,
        mut change: impl FnMut(&mut Vec<KeyRecord>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let doc = self.doc.as_ref().ok_or_else(|| {
            ApiError::Conflict("This server has no data directory for runtime keys.".into())
        })?;
        let out = doc.edit(|f: &mut KeyFile| {
            let out = change(&mut f.keys)?;
            f.version = 1;
            table(&f.keys).map_err(ApiError::BadRequest)?;
            Ok::<_, ApiError>(out)
        })?;
        if let Err(e) = self.sync_table() {
            tracing::error!(error = %e, "runtime keys written but not in force");
            return Err(ApiError::Internal("runtime keys written but not in force"));
        }
        Ok(out)
    }

    /// Whether `key` is already a key of either layer (or of the exchange's `keys`).
    fn taken(&self, key: &str, exchange: Option<&Keys>, records: &[KeyRecord]) -> bool {
        let d = hex(&digest(key));
        self.config().knows(key)
            || exchange.is_some_and(|k| k.knows(key))
            || records.iter().any(|r| r.digest == d)
    }

    /// Makes a key: `req` names it and gives at least one grant; the answer holds the key in
    /// clear, the only time it is shown.
    pub fn create(
        &self,
        req: KeyRequest,
        exchange: Option<&Keys>,
        now: i64,
    ) -> Result<(KeyRecord, String), ApiError> {
        let name = check_name(req.name.as_deref())?;
        let sightings = match &req.sightings {
            None | Some(Value::Null) => None,
            Some(v) => Some(sighting_grants(v).map_err(ApiError::BadRequest)?),
        };
        let exchange_grant = match &req.exchange {
            None | Some(Value::Null) => None,
            Some(v) => {
                exchange_grants(v).map_err(ApiError::BadRequest)?;
                Some(v.clone())
            }
        };
        if sightings.is_none() && exchange_grant.is_none() {
            return Err(ApiError::BadRequest(
                "A key needs a grant: \"sightings\" (\"rw:feeds/misp\") and/or \"exchange\" \
                 ({\"org\": …, \"publish\": […], \"read\": […]})."
                    .into(),
            ));
        }
        let key = match req.key {
            Some(k) => check_given_key(&k)?,
            None => random_hex(32)?,
        };
        let record = KeyRecord {
            id: format!("k-{}", random_hex(6)?),
            name,
            digest: hex(&digest(&key)),
            created: now,
            sightings,
            exchange: exchange_grant,
            invitation: None,
        };
        self.insert(record, key, exchange)
    }

    /// Makes a single-use invitation key valid for `seconds` (see [`INVITATION_SECONDS`]).
    pub fn create_invitation(
        &self,
        name: &str,
        seconds: Option<i64>,
        now: i64,
    ) -> Result<(KeyRecord, String), ApiError> {
        let name = check_name(Some(name))?;
        let secs = seconds.unwrap_or(INVITATION_SECONDS.0);
        if !(1..=INVITATION_SECONDS.1).contains(&secs) {
            return Err(ApiError::BadRequest(format!(
                "expires_in must be between 1 and {} seconds.",
                INVITATION_SECONDS.1
            )));
        }
        let key = random_hex(32)?;
        let record = KeyRecord {
            id: format!("k-{}", random_hex(6)?),
            name: format!("invitation:{name}"),
            digest: hex(&digest(&key)),
            created: now,
            sightings: None,
            exchange: None,
            invitation: Some(InvitationRecord {
                expires: now.saturating_add(secs),
            }),
        };
        self.insert(record, key, None)
    }

    fn insert(
        &self,
        record: KeyRecord,
        key: String,
        exchange: Option<&Keys>,
    ) -> Result<(KeyRecord, String), ApiError> {
        self.edit(|rs| {
            if rs.len() >= MAX_RUNTIME_KEYS {
                return Err(ApiError::Conflict(format!(
                    "There are already {MAX_RUNTIME_KEYS} runtime keys; revoke some first."
                )));
            }
            if self.taken(&key, exchange, rs) {
                return Err(ApiError::Conflict(
                    "That key is already in use; choose another one (or let the server generate one).".into(),
                ));
            }
            rs.push(record.clone());
            Ok(())
        })?;
        tracing::info!(id = %record.id, name = %record.name, "runtime API key created");
        Ok((
            KeyRecord {
                digest: String::new(),
                ..record
            },
            key,
        ))
    }

    /// Changes a key's name or grants (a field sent as `null` removes that grant).
    pub fn update(&self, id: &str, req: KeyRequest) -> Result<KeyRecord, ApiError> {
        if req.key.is_some() {
            return Err(ApiError::BadRequest(
                "A key's secret cannot change; make a new key and revoke this one.".into(),
            ));
        }
        let name = req
            .name
            .as_deref()
            .map(|n| check_name(Some(n)))
            .transpose()?;
        let sightings = req
            .sightings
            .as_ref()
            .map(|v| match v {
                Value::Null => Ok(None),
                v => sighting_grants(v).map(Some),
            })
            .transpose()
            .map_err(ApiError::BadRequest)?;
        let exchange = req
            .exchange
            .as_ref()
            .map(|v| match v {
                Value::Null => Ok(None),
                v => exchange_grants(v).map(|_| Some(v.clone())),
            })
            .transpose()
            .map_err(ApiError::BadRequest)?;
        let out = self.edit(|rs| {
            let r = rs
                .iter_mut()
                .find(|r| r.id == id)
                .ok_or_else(|| no_key(id))?;
            if r.invitation.is_some() {
                return Err(ApiError::Conflict(
                    "An invitation has no grants to change; revoke it instead.".into(),
                ));
            }
            if let Some(n) = &name {
                r.name.clone_from(n);
            }
            if let Some(s) = &sightings {
                r.sightings.clone_from(s);
            }
            if let Some(e) = &exchange {
                r.exchange.clone_from(e);
            }
            if r.sightings.is_none() && r.exchange.is_none() {
                return Err(ApiError::BadRequest(
                    "That change leaves the key without any grant; revoke it instead.".into(),
                ));
            }
            Ok(r.clone())
        })?;
        tracing::info!(id = %out.id, "runtime API key changed");
        Ok(KeyRecord {
            digest: String::new(),
            ..out
        })
    }

    /// Revokes a key: refused from the next request on.
    pub fn revoke(&self, id: &str) -> Result<KeyRecord, ApiError> {
        let out = self.edit(|rs| {
            let i = rs
                .iter()
                .position(|r| r.id == id)
                .ok_or_else(|| no_key(id))?;
            Ok(rs.remove(i))
        })?;
        tracing::info!(id = %out.id, name = %out.name, "runtime API key revoked");
        Ok(KeyRecord {
            digest: String::new(),
            ..out
        })
    }

    /// Redeems the invitation key of `header`: it is removed (durably) before this returns,
    /// so a second use is refused. Refused (403) for any other key, or once expired.
    pub fn redeem(&self, header: Option<&[u8]>, now: i64) -> Result<KeyRecord, ApiError> {
        let refused = || {
            ApiError::Denied("Not a valid invitation: unknown, already used, or expired. Ask the inviter for a new `sighthub peer invite` token.".into())
        };
        let entry = self.runtime_entry(header).ok_or_else(refused)?;
        let inv = entry.invitation.clone().ok_or_else(refused)?;
        let id = entry.id.clone();
        let record = self.edit(|rs| {
            let i = rs.iter().position(|r| r.id == id).ok_or_else(refused)?;
            Ok(rs.remove(i))
        })?;
        if inv.expires < now {
            return Err(refused());
        }
        tracing::info!(id = %record.id, name = %record.name, "invitation redeemed");
        Ok(record)
    }
}

fn no_key(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "No runtime key '{id}' (GET /_api/keys lists them)."
    ))
}

fn check_name(name: Option<&str>) -> Result<String, ApiError> {
    let n = name.map(str::trim).unwrap_or("");
    if n.is_empty() || n.chars().count() > MAX_NAME_CHARS || n.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "\"name\" is required: 1 to {MAX_NAME_CHARS} printable characters."
        )));
    }
    Ok(n.to_owned())
}

fn check_given_key(k: &str) -> Result<String, ApiError> {
    let (min, max) = GIVEN_KEY_CHARS;
    if k.len() < min || k.len() > max || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::BadRequest(format!(
            "A given \"key\" must be {min} to {max} printable ASCII characters without spaces; \
             leave it out to have one generated."
        )));
    }
    Ok(k.to_owned())
}
