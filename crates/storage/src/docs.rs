//! Small shared documents: the runtime API keys, the console's session secret and
//! revocations, and the peers added by invitation. Each is one JSON document, read whole,
//! changed by compare-and-set on its version, and cached by every front end.
//!
//! - [`Documents`] is the seam: a named blob with a version, and a put that succeeds only
//!   when the version is still the one the writer read. [`FileDocuments`] keeps them as
//!   files in the data directory (one front end), [`MemoryDocuments`] in memory (what a
//!   restart may forget), and the Redis engine's documents (`sighthub-redis`) in the cluster
//!   that several front ends share.
//! - [`Shared`] is the one rule above it: a typed document with its cached copy; lookups read
//!   the cache and never wait for the store; [`Shared::edit`] reads the latest version,
//!   applies a change and writes it back by compare-and-set, retrying on a concurrent change
//!   (at most [`EDIT_TRIES`] times); [`Shared::refresh`] picks up the other front ends'
//!   changes. A front end that shares its documents ([`Documents::shared`]) refreshes them
//!   every [`REFRESH`], which bounds how long another front end keeps a revoked key.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How often a front end whose documents are shared reads their versions again: a change on
/// one front end (a key revoked, a console session closed, a peer added) is in force on every
/// other one within this period plus one round trip.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How many times [`Shared::edit`] retries when another front end changed the document
/// between its read and its write.
pub const EDIT_TRIES: usize = 16;
/// Largest document: a change that would make one larger is refused.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// A document's bytes and version (versions start at 1; 0 means absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// Its version: every successful put increments it.
    pub version: u64,
    /// Its bytes (JSON).
    pub body: Vec<u8>,
}

/// Why a document cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DocError {
    /// The store cannot be reached or failed.
    #[error("shared document '{name}': {why}")]
    Unavailable {
        /// The document.
        name: String,
        /// What failed.
        why: String,
    },
    /// The stored bytes are not a document sighthub wrote.
    #[error("shared document '{name}' is unreadable ({why}); restore it from a backup, or remove it to start without it")]
    Corrupt {
        /// The document.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// Other writers changed it [`EDIT_TRIES`] times in a row.
    #[error(
        "shared document '{name}' changed under every one of {EDIT_TRIES} attempts; try again"
    )]
    Contended {
        /// The document.
        name: String,
    },
    /// The change would make it larger than [`MAX_DOCUMENT_BYTES`].
    #[error("shared document '{name}' would be {bytes} bytes; at most {MAX_DOCUMENT_BYTES}")]
    TooLarge {
        /// The document.
        name: String,
        /// Its size after the change.
        bytes: usize,
    },
}

impl DocError {
    /// The HTTP status that fits: 503 (try again later), 500 for a corrupt document, 409
    /// for a change that would make it too large (the state refuses it, not the request).
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Corrupt { .. } => 500,
            Self::TooLarge { .. } => 409,
            _ => 503,
        }
    }
}

/// The seam: named documents with a version, replaced by compare-and-set.
pub trait Documents: Send + Sync + std::fmt::Debug {
    /// The document `name` and its version, or `None` when it was never written.
    fn get(&self, name: &str) -> Result<Option<Versioned>, DocError>;
    /// Its version only (0 when absent): what a refresh asks first.
    fn version(&self, name: &str) -> Result<u64, DocError>;
    /// Replaces `name` with `body` when its version is still `expected` (0: absent), durably
    /// before it returns; `Some(new version)`, or `None` when another writer changed it.
    fn put(&self, name: &str, expected: u64, body: &[u8]) -> Result<Option<u64>, DocError>;
    /// Whether other front ends read and write the same documents (then they are refreshed
    /// every [`REFRESH`]).
    fn shared(&self) -> bool;
}

/// Documents kept in memory: lost at a restart, seen by this process only.
#[derive(Debug, Default)]
pub struct MemoryDocuments {
    docs: Mutex<HashMap<String, Versioned>>,
}

impl Documents for MemoryDocuments {
    fn get(&self, name: &str) -> Result<Option<Versioned>, DocError> {
        Ok(lock(&self.docs).get(name).cloned())
    }

    fn version(&self, name: &str) -> Result<u64, DocError> {
        Ok(lock(&self.docs).get(name).map_or(0, |d| d.version))
    }

    fn put(&self, name: &str, expected: u64, body: &[u8]) -> Result<Option<u64>, DocError> {
        let mut docs = lock(&self.docs);
        let cur = docs.get(name).map_or(0, |d| d.version);
        if cur != expected {
            return Ok(None);
        }
        let version = cur + 1;
        docs.insert(
            name.to_owned(),
            Versioned {
                version,
                body: body.to_vec(),
            },
        );
        Ok(Some(version))
    }

    fn shared(&self) -> bool {
        false
    }
}

/// Documents kept as files `<dir>/<name>.json` (mode 0600), replaced atomically and durably.
/// One process owns the directory, so versions are counted in memory: a file found at the
/// first read is version 1.
#[derive(Debug)]
pub struct FileDocuments {
    dir: PathBuf,
    versions: Mutex<HashMap<String, u64>>,
}

impl FileDocuments {
    /// Documents under `dir` (a name may hold `/`: `relay/peers` is `<dir>/relay/peers.json`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            versions: Mutex::new(HashMap::new()),
        }
    }

    /// The file of document `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    fn unavailable(&self, name: &str, e: std::io::Error) -> DocError {
        DocError::Unavailable {
            name: name.to_owned(),
            why: format!("{}: {e}", self.path(name).display()),
        }
    }

    /// The version of `name`, learnt from the file's presence at the first call.
    fn current(&self, versions: &mut HashMap<String, u64>, name: &str) -> u64 {
        *versions
            .entry(name.to_owned())
            .or_insert_with(|| u64::from(self.path(name).exists()))
    }
}

impl Documents for FileDocuments {
    fn get(&self, name: &str) -> Result<Option<Versioned>, DocError> {
        let mut versions = lock(&self.versions);
        let version = self.current(&mut versions, name);
        match std::fs::read(self.path(name)) {
            Ok(body) => Ok(Some(Versioned {
                version: version.max(1),
                body,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.unavailable(name, e)),
        }
    }

    fn version(&self, name: &str) -> Result<u64, DocError> {
        Ok(self.current(&mut lock(&self.versions), name))
    }

    fn put(&self, name: &str, expected: u64, body: &[u8]) -> Result<Option<u64>, DocError> {
        let mut versions = lock(&self.versions);
        let cur = self.current(&mut versions, name);
        if cur != expected {
            return Ok(None);
        }
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| self.unavailable(name, e))?;
        }
        crate::file::replace_durably(&path, body, 0o600).map_err(|e| self.unavailable(name, e))?;
        versions.insert(name.to_owned(), cur + 1);
        Ok(Some(cur + 1))
    }

    fn shared(&self) -> bool {
        false
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A typed document with its cached copy. See the module docs.
#[derive(Debug)]
pub struct Shared<T> {
    docs: Arc<dyn Documents>,
    name: String,
    cached: RwLock<(u64, Arc<T>)>,
    /// Serialises this front end's edits (other front ends are held off by the version).
    writer: Mutex<()>,
}

impl<T> Shared<T>
where
    T: Serialize + DeserializeOwned + Default + Clone,
{
    /// Reads document `name` from `docs` (a missing one is `T::default()`).
    pub fn open(docs: Arc<dyn Documents>, name: &str) -> Result<Self, DocError> {
        let s = Self {
            docs,
            name: name.to_owned(),
            cached: RwLock::new((0, Arc::new(T::default()))),
            writer: Mutex::new(()),
        };
        let (version, value) = s.read()?;
        *s.cached.write().unwrap_or_else(|p| p.into_inner()) = (version, Arc::new(value));
        Ok(s)
    }

    /// The document's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether other front ends share it.
    pub fn is_shared(&self) -> bool {
        self.docs.shared()
    }

    /// The cached copy and its version (never waits for the store).
    pub fn current(&self) -> (u64, Arc<T>) {
        let c = self.cached.read().unwrap_or_else(|p| p.into_inner());
        (c.0, Arc::clone(&c.1))
    }

    fn read(&self) -> Result<(u64, T), DocError> {
        match self.docs.get(&self.name)? {
            None => Ok((0, T::default())),
            Some(v) => {
                let value = serde_json::from_slice(&v.body).map_err(|e| DocError::Corrupt {
                    name: self.name.clone(),
                    why: e.to_string(),
                })?;
                Ok((v.version, value))
            }
        }
    }

    /// Makes `value` the cached copy. Called under the writer lock only, with what the store
    /// holds now, so the latest read always wins, even a lower version (a document removed
    /// from the store and written again starts over at 1).
    fn install(&self, version: u64, value: T) {
        *self.cached.write().unwrap_or_else(|p| p.into_inner()) = (version, Arc::new(value));
    }

    /// Reads the document again when its version changed; `true` when the cache changed.
    pub fn refresh(&self) -> Result<bool, DocError> {
        // Not beside an edit of this front end: a read older than its write would undo it.
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let cached = self.current().0;
        if self.docs.version(&self.name)? == cached {
            return Ok(false);
        }
        let (version, value) = self.read()?;
        if version == cached {
            return Ok(false);
        }
        self.install(version, value);
        Ok(true)
    }

    /// Applies `change` to the latest version and writes it back by compare-and-set (see the
    /// module docs); the cache holds the result when this returns `Ok`. `change` may run
    /// more than once (once per attempt), and nothing is written when it fails.
    pub fn edit<R, E>(&self, mut change: impl FnMut(&mut T) -> Result<R, E>) -> Result<R, E>
    where
        E: From<DocError>,
    {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..EDIT_TRIES {
            let (version, mut value) = self.read()?;
            let out = change(&mut value)?;
            let body = serde_json::to_vec_pretty(&value).map_err(|e| DocError::Corrupt {
                name: self.name.clone(),
                why: e.to_string(),
            })?;
            if body.len() > MAX_DOCUMENT_BYTES {
                return Err(DocError::TooLarge {
                    name: self.name.clone(),
                    bytes: body.len(),
                }
                .into());
            }
            if let Some(v) = self.docs.put(&self.name, version, &body)? {
                self.install(v, value);
                return Ok(out);
            }
        }
        Err(DocError::Contended {
            name: self.name.clone(),
        }
        .into())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    struct List {
        items: Vec<u32>,
    }

    fn push(s: &Shared<List>, n: u32) -> Result<usize, DocError> {
        s.edit(|l| {
            l.items.push(n);
            Ok::<_, DocError>(l.items.len())
        })
    }

    /// Two front ends over one store: an edit on one is seen by the other after a refresh,
    /// and an edit from a stale cache is applied to the latest version (nothing lost).
    fn two_front_ends(docs: Arc<dyn Documents>) {
        let a: Shared<List> = Shared::open(Arc::clone(&docs), "list").expect("a");
        let b: Shared<List> = Shared::open(docs, "list").expect("b");
        assert_eq!(a.current().0, 0);
        assert_eq!(push(&a, 1).expect("push"), 1);
        assert_eq!(b.current().1.items, Vec::<u32>::new());
        // b's cache is stale, its edit is not: it reads the latest version first.
        assert_eq!(push(&b, 2).expect("push"), 2);
        assert_eq!(b.current().1.items, vec![1, 2]);
        assert!(a.refresh().expect("refresh"));
        assert_eq!(a.current().1.items, vec![1, 2]);
        assert!(!a.refresh().expect("unchanged"));
        // A failed change writes nothing.
        let v = a.current().0;
        let r: Result<(), DocError> = a.edit(|l| {
            l.items.clear();
            Err(DocError::Contended {
                name: "refused".into(),
            })
        });
        assert!(r.is_err());
        assert_eq!(a.current(), (v, Arc::new(List { items: vec![1, 2] })));
    }

    #[test]
    fn memory_documents_compare_and_set() {
        let m = MemoryDocuments::default();
        assert_eq!(m.put("d", 1, b"x").expect("put"), None);
        assert_eq!(m.put("d", 0, b"x").expect("put"), Some(1));
        assert_eq!(m.put("d", 0, b"y").expect("put"), None);
        assert_eq!(
            m.get("d").expect("get").map(|v| v.body),
            Some(b"x".to_vec())
        );
        two_front_ends(Arc::new(MemoryDocuments::default()));
    }

    #[test]
    fn file_documents_survive_a_restart_and_keep_their_format() {
        let dir = tempfile::tempdir().expect("tmp");
        two_front_ends(Arc::new(FileDocuments::new(dir.path())));
        let path = dir.path().join("list.json");
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("file")).expect("json");
        assert_eq!(v, serde_json::json!({"items": [1, 2]}));
        // A new process: the file is version 1, and editing it keeps what it held.
        let again: Shared<List> =
            Shared::open(Arc::new(FileDocuments::new(dir.path())), "list").expect("open");
        assert_eq!(again.current().0, 1);
        assert_eq!(push(&again, 3).expect("push"), 3);
        // A nested name is a file in a subdirectory.
        let nested: Shared<List> =
            Shared::open(Arc::new(FileDocuments::new(dir.path())), "relay/peers").expect("open");
        push(&nested, 7).expect("push");
        assert!(dir.path().join("relay/peers.json").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_document_written_anew_in_the_store_replaces_the_cache() {
        let m = Arc::new(MemoryDocuments::default());
        let s: Shared<List> =
            Shared::open(Arc::clone(&m) as Arc<dyn Documents>, "d").expect("open");
        for n in 0..3 {
            push(&s, n).expect("push");
        }
        assert_eq!(s.current().0, 3);
        // Removed from the store (an operator's mistake, a restored backup) and written again:
        // version 1, which the cache must take although it is lower.
        lock(&m.docs).remove("d");
        let body = serde_json::to_vec(&List { items: vec![9] }).expect("json");
        assert_eq!(m.put("d", 0, &body).expect("put"), Some(1));
        assert!(s.refresh().expect("refresh"));
        assert_eq!(s.current(), (1, Arc::new(List { items: vec![9] })));
        // And an edit goes on from there.
        assert_eq!(push(&s, 10).expect("push"), 2);
    }

    #[test]
    fn a_corrupt_document_is_refused_with_its_name() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("keys.json"), b"{not json").expect("write");
        let e = Shared::<List>::open(Arc::new(FileDocuments::new(dir.path())), "keys")
            .expect_err("corrupt");
        assert!(matches!(e, DocError::Corrupt { .. }));
        assert!(e.to_string().contains("keys"));
        assert_eq!(e.http_status(), 500);
    }

    #[test]
    fn a_writer_that_always_loses_gives_up() {
        /// A store where someone else always wrote in between.
        #[derive(Debug)]
        struct AlwaysChanged;
        impl Documents for AlwaysChanged {
            fn get(&self, _: &str) -> Result<Option<Versioned>, DocError> {
                Ok(None)
            }
            fn version(&self, _: &str) -> Result<u64, DocError> {
                Ok(0)
            }
            fn put(&self, _: &str, _: u64, _: &[u8]) -> Result<Option<u64>, DocError> {
                Ok(None)
            }
            fn shared(&self) -> bool {
                true
            }
        }
        let s: Shared<List> = Shared::open(Arc::new(AlwaysChanged), "x").expect("open");
        let mut tries = 0;
        let r = s.edit(|l| {
            tries += 1;
            l.items.push(1);
            Ok::<_, DocError>(())
        });
        assert!(matches!(r, Err(DocError::Contended { .. })));
        assert_eq!(tries, EDIT_TRIES);
    }
}
