//! Parses a request line into an [`Endpoint`] before anything else happens, for both APIs:
//! the sighting routes and the `/iep04/` routes, with one route table ([`ROUTES`]).
//!
//! The namespace is everything after the route prefix up to `?`, percent-decoded (it must be
//! UTF-8); it is normalised later, by the handler, so that errors can echo what was sent. An
//! `/iep04/` path segment (uuid, consumer name) is percent-decoded the same way.

use crate::error::ApiError;
use hyper::Method;

/// Every route: method, path pattern, one-line description. The help page is made from this
/// table and a test checks that the OpenAPI document lists each entry.
pub const ROUTES: &[(&str, &str, &str)] = &[
    (
        "GET",
        "/w/{namespace}",
        "write a sighting: ?val=V[&timestamp=T][&ttl=S][&tags=a,b]",
    ),
    (
        "GET",
        "/r/{namespace}",
        "read ?val=V[&noshadow], list (?limit=N&after=C pages), or ?count",
    ),
    (
        "GET",
        "/rs/{namespace}",
        "read ?val=V[&noshadow] with hourly stats",
    ),
    (
        "POST",
        "/wb",
        "bulk write {\"items\":[{namespace,value,timestamp?,ttl?,tags?}]}",
    ),
    ("POST", "/vwb", "dry run of /wb"),
    (
        "POST",
        "/rb",
        "bulk read {\"items\":[{namespace,value,noshadow?}]}",
    ),
    ("POST", "/rbs", "bulk read with hourly stats"),
    ("GET", "/d/{namespace}", "delete a namespace"),
    (
        "POST",
        "/d/{namespace}",
        "delete a namespace (as the Python client does)",
    ),
    (
        "GET",
        "/c/{namespace}",
        "read a namespace's configuration (value_format)",
    ),
    (
        "POST",
        "/c/{namespace}",
        "set a namespace's value_format: RAW, SHA256, BASE64URL",
    ),
    ("GET", "/i", "implementation information"),
    ("GET", "/health", "liveness and version"),
    (
        "GET",
        "/_api/latest",
        "latest writes: ?limit=N&since=T&namespace=P",
    ),
    (
        "GET",
        "/_api/namespaces",
        "stored namespaces readable by the key",
    ),
    (
        "GET",
        "/_api/who",
        "the namespaces holding ?val=V that the key may read",
    ),
    ("GET", "/_api/openapi.yaml", "this API as OpenAPI 3"),
    (
        "GET",
        "/metrics",
        "admin: Prometheus metrics of both halves (OpenMetrics text)",
    ),
    (
        "POST",
        "/_api/merge",
        "SightingDB galaxy synchronisation: not implemented (501)",
    ),
    (
        "POST",
        "/_api/tier",
        "SightingDB tier synchronisation: not implemented (501)",
    ),
    (
        "GET",
        "/_api/keys",
        "admin: the runtime API keys (never their secrets)",
    ),
    (
        "POST",
        "/_api/keys",
        "admin: make a key {name, sightings?: \"rw:ns\", exchange?: {org, publish, read, tlp_max}, key?}",
    ),
    (
        "PATCH",
        "/_api/keys/{id}",
        "admin: change a key's name or grants (null removes a grant)",
    ),
    ("DELETE", "/_api/keys/{id}", "admin: revoke a key"),
    (
        "POST",
        "/_api/peers/invite",
        "admin: a single-use invitation token {url, name, expires_in?}",
    ),
    (
        "POST",
        "/_api/peers/join",
        "admin: join by invitation {token, url, name}",
    ),
    (
        "GET",
        "/stix/{namespace}",
        "a namespace as a STIX 2.1 bundle: ?limit=N&val=V&recursive&untyped=include",
    ),
    (
        "POST",
        "/_api/stix",
        "namespaces as one STIX 2.1 bundle {\"namespaces\":[..],q?,limit?,untyped?,recursive?}",
    ),
    (
        "POST",
        "/iep04/messages",
        "IEP04: publish envelopes, a JSON array, ND-JSON, or a bare IntelMQ event",
    ),
    (
        "GET",
        "/iep04/messages",
        "IEP04: read after=CURSOR&limit=N&wait=S&export=envelope|intelmq&with_type=1&format=ndjson",
    ),
    (
        "GET",
        "/iep04/messages/{uuid}",
        "IEP04: one message, with withdrawn_by / replaced_by",
    ),
    ("GET", "/iep04/links/{uuid}", "IEP04: what links to uuid"),
    (
        "GET",
        "/iep04/links",
        "IEP04: ?alternate=ID, messages with that alternate id",
    ),
    (
        "GET",
        "/iep04/consumers/{name}",
        "IEP04: a named consumer's server-side cursor",
    ),
    (
        "DELETE",
        "/iep04/consumers/{name}",
        "IEP04: forget a named consumer",
    ),
    (
        "GET",
        "/iep04/consumers/{name}/messages",
        "IEP04: read after the consumer's cursor (does not move it)",
    ),
    (
        "POST",
        "/iep04/consumers/{name}/ack",
        "IEP04: acknowledge up to {\"cursor\": C}",
    ),
    (
        "GET",
        "/iep04/status",
        "IEP04: identity, log bounds, retention",
    ),
    (
        "GET",
        "/iep04/peers",
        "IEP04 (admin): every relay link with its counters and last error",
    ),
    (
        "GET",
        "/iep04/peers/{name}",
        "IEP04 (admin): one relay link",
    ),
    (
        "POST",
        "/iep04/peers/redeem",
        "IEP04: redeem an invitation key (once) {url, fingerprint, org, name, key}",
    ),
    ("GET", "/taxii2/", "TAXII 2.1 discovery (exchange keys)"),
    ("GET", "/taxii2/api/", "TAXII 2.1 API root"),
    (
        "GET",
        "/taxii2/api/collections/",
        "TAXII 2.1: one collection per feed the key reads",
    ),
    (
        "GET",
        "/taxii2/api/collections/{id}/",
        "TAXII 2.1: one collection",
    ),
    (
        "GET",
        "/taxii2/api/collections/{id}/objects/",
        "TAXII 2.1: STIX 2.1 objects, ?added_after=&limit=&next=&match[type]=&match[id]=",
    ),
    (
        "GET",
        "/taxii2/api/collections/{id}/manifest/",
        "TAXII 2.1: the objects' manifest, same paging",
    ),
    ("GET", "/_management/", "the web console (admin key)"),
    ("GET", "/_management/app.js", "the console's script (embedded)"),
    ("GET", "/_management/app.css", "the console's style sheet (embedded)"),
    (
        "POST",
        "/_management/login",
        "console: open a session with the admin key {key}",
    ),
    ("POST", "/_management/logout", "console: end the session"),
    (
        "GET",
        "/_management/session",
        "console: the session's CSRF token",
    ),
    (
        "GET",
        "/_management/overview",
        "console (admin): exchange, consumers, links, transports, configuration",
    ),
    ("GET", "/", "this help"),
];

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /w/<ns>`.
    Write(String),
    /// `GET /r/<ns>`.
    Read(String),
    /// `GET /rs/<ns>`.
    ReadStats(String),
    /// `POST /wb`.
    BulkWrite,
    /// `POST /vwb`.
    BulkValidate,
    /// `POST /rb` (false) or `/rbs` (true).
    BulkRead(bool),
    /// `GET|POST /d/<ns>`.
    Delete(String),
    /// `GET /c/<ns>`.
    ConfigGet(String),
    /// `POST /c/<ns>`.
    ConfigSet(String),
    /// `GET /i`.
    Info,
    /// `GET /health`.
    Health,
    /// `GET /_api/latest`.
    Latest,
    /// `GET /_api/namespaces`.
    Namespaces,
    /// `GET /_api/who`.
    Who,
    /// `GET /_api/openapi.yaml`.
    OpenApi,
    /// `GET /metrics`.
    Metrics,
    /// `GET /iep04/peers`.
    Iep04Peers,
    /// `GET /iep04/peers/{name}`.
    Iep04Peer(String),
    /// `POST /_api/merge` or `/_api/tier` (SightingDB's galaxy; refused, 501): `true` for tier.
    Galaxy(bool),
    /// `GET /_api/keys`.
    KeysList,
    /// `POST /_api/keys`.
    KeysCreate,
    /// `PATCH /_api/keys/{id}`.
    KeysUpdate(String),
    /// `DELETE /_api/keys/{id}`.
    KeysRevoke(String),
    /// `POST /_api/peers/invite`.
    PeersInvite,
    /// `POST /_api/peers/join`.
    PeersJoin,
    /// `GET /`.
    Help,
    /// `POST /iep04/messages`: publish.
    Iep04Publish,
    /// `GET /iep04/messages`: read the log after a cursor.
    Iep04Read,
    /// `GET /iep04/messages/{uuid}`.
    Iep04Message(String),
    /// `GET /iep04/links/{uuid}`.
    Iep04Links(String),
    /// `GET /iep04/links?alternate=`.
    Iep04LinksByAlternate,
    /// `GET /iep04/consumers/{name}`.
    Iep04Consumer(String),
    /// `DELETE /iep04/consumers/{name}`.
    Iep04ConsumerDelete(String),
    /// `GET /iep04/consumers/{name}/messages`.
    Iep04ConsumerMessages(String),
    /// `POST /iep04/consumers/{name}/ack`.
    Iep04ConsumerAck(String),
    /// `GET /iep04/status`.
    Iep04Status,
    /// `GET /stix/<ns>`.
    Stix(String),
    /// `POST /_api/stix`.
    StixApi,
    /// `POST /iep04/peers/redeem`.
    Iep04Redeem,
    /// A `/taxii2/` route.
    Taxii(crate::cmd::taxii::TaxiiRoute),
    /// A `/_management/` route (the web console).
    Console(ConsoleRoute),
}

/// The console's routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleRoute {
    /// The page.
    Page,
    /// The script.
    Script,
    /// The style sheet.
    Style,
    /// `POST login`.
    Login,
    /// `POST logout`.
    Logout,
    /// `GET session`.
    Session,
    /// `GET overview`.
    Overview,
}

impl Endpoint {
    /// The method and path pattern of this endpoint, as [`ROUTES`] lists it (exhaustive: a
    /// new endpoint needs its entry, which a test checks).
    pub fn pattern(&self) -> (&'static str, &'static str) {
        match self {
            Endpoint::Write(_) => ("GET", "/w/{namespace}"),
            Endpoint::Read(_) => ("GET", "/r/{namespace}"),
            Endpoint::ReadStats(_) => ("GET", "/rs/{namespace}"),
            Endpoint::BulkWrite => ("POST", "/wb"),
            Endpoint::BulkValidate => ("POST", "/vwb"),
            Endpoint::BulkRead(false) => ("POST", "/rb"),
            Endpoint::BulkRead(true) => ("POST", "/rbs"),
            Endpoint::Delete(_) => ("GET", "/d/{namespace}"),
            Endpoint::ConfigGet(_) => ("GET", "/c/{namespace}"),
            Endpoint::ConfigSet(_) => ("POST", "/c/{namespace}"),
            Endpoint::Info => ("GET", "/i"),
            Endpoint::Health => ("GET", "/health"),
            Endpoint::Latest => ("GET", "/_api/latest"),
            Endpoint::Namespaces => ("GET", "/_api/namespaces"),
            Endpoint::Who => ("GET", "/_api/who"),
            Endpoint::OpenApi => ("GET", "/_api/openapi.yaml"),
            Endpoint::Metrics => ("GET", "/metrics"),
            Endpoint::Iep04Peers => ("GET", "/iep04/peers"),
            Endpoint::Iep04Peer(_) => ("GET", "/iep04/peers/{name}"),
            Endpoint::Galaxy(false) => ("POST", "/_api/merge"),
            Endpoint::Galaxy(true) => ("POST", "/_api/tier"),
            Endpoint::KeysList => ("GET", "/_api/keys"),
            Endpoint::KeysCreate => ("POST", "/_api/keys"),
            Endpoint::KeysUpdate(_) => ("PATCH", "/_api/keys/{id}"),
            Endpoint::KeysRevoke(_) => ("DELETE", "/_api/keys/{id}"),
            Endpoint::PeersInvite => ("POST", "/_api/peers/invite"),
            Endpoint::PeersJoin => ("POST", "/_api/peers/join"),
            Endpoint::Help => ("GET", "/"),
            Endpoint::Iep04Publish => ("POST", "/iep04/messages"),
            Endpoint::Iep04Read => ("GET", "/iep04/messages"),
            Endpoint::Iep04Message(_) => ("GET", "/iep04/messages/{uuid}"),
            Endpoint::Iep04Links(_) => ("GET", "/iep04/links/{uuid}"),
            Endpoint::Iep04LinksByAlternate => ("GET", "/iep04/links"),
            Endpoint::Iep04Consumer(_) => ("GET", "/iep04/consumers/{name}"),
            Endpoint::Iep04ConsumerDelete(_) => ("DELETE", "/iep04/consumers/{name}"),
            Endpoint::Iep04ConsumerMessages(_) => ("GET", "/iep04/consumers/{name}/messages"),
            Endpoint::Iep04ConsumerAck(_) => ("POST", "/iep04/consumers/{name}/ack"),
            Endpoint::Iep04Status => ("GET", "/iep04/status"),
            Endpoint::Iep04Redeem => ("POST", "/iep04/peers/redeem"),
            Endpoint::Console(r) => match r {
                ConsoleRoute::Page => ("GET", "/_management/"),
                ConsoleRoute::Script => ("GET", "/_management/app.js"),
                ConsoleRoute::Style => ("GET", "/_management/app.css"),
                ConsoleRoute::Login => ("POST", "/_management/login"),
                ConsoleRoute::Logout => ("POST", "/_management/logout"),
                ConsoleRoute::Session => ("GET", "/_management/session"),
                ConsoleRoute::Overview => ("GET", "/_management/overview"),
            },
            Endpoint::Taxii(r) => {
                use crate::cmd::taxii::TaxiiRoute as T;
                (
                    "GET",
                    match r {
                        T::Discovery => "/taxii2/",
                        T::ApiRoot => "/taxii2/api/",
                        T::Collections => "/taxii2/api/collections/",
                        T::Collection(_) => "/taxii2/api/collections/{id}/",
                        T::Objects(_) => "/taxii2/api/collections/{id}/objects/",
                        T::Manifest(_) => "/taxii2/api/collections/{id}/manifest/",
                    },
                )
            }
            Endpoint::Stix(_) => ("GET", "/stix/{namespace}"),
            Endpoint::StixApi => ("POST", "/_api/stix"),
        }
    }

    /// A route of the IEP04 exchange: its pattern is under `/iep04/`. (Who may call it is
    /// `app::route_access`'s decision, tested to agree.)
    pub fn is_iep04(&self) -> bool {
        self.pattern().1.starts_with("/iep04/")
    }
}

fn decode_path(raw: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::BadRequest("Namespace is not valid UTF-8 once decoded.".into()))
}

fn decode_segment(s: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::BadRequest("Path segment is not valid UTF-8 once decoded.".into()))
}

/// The `/iep04/` routes: route first (404), then method (405), as the exchange did.
fn parse_iep04(method: &Method, path: &str, rest: &str) -> Result<Endpoint, ApiError> {
    let get = *method == Method::GET || *method == Method::HEAD;
    let post = *method == Method::POST;
    let delete = *method == Method::DELETE;
    let wrong = |allow: &'static str| Err(ApiError::Method(method.to_string(), allow));
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["messages"] if post => Ok(Endpoint::Iep04Publish),
        ["messages"] if get => Ok(Endpoint::Iep04Read),
        ["messages"] => wrong("GET, POST"),
        ["messages", id] if !id.is_empty() => {
            let id = decode_segment(id)?;
            if get {
                Ok(Endpoint::Iep04Message(id))
            } else {
                wrong("GET")
            }
        }
        ["links"] if get => Ok(Endpoint::Iep04LinksByAlternate),
        ["links"] => wrong("GET"),
        ["links", id] if !id.is_empty() => {
            let id = decode_segment(id)?;
            if get {
                Ok(Endpoint::Iep04Links(id))
            } else {
                wrong("GET")
            }
        }
        ["consumers", name] if !name.is_empty() => {
            let name = decode_segment(name)?;
            if get {
                Ok(Endpoint::Iep04Consumer(name))
            } else if delete {
                Ok(Endpoint::Iep04ConsumerDelete(name))
            } else {
                wrong("GET, DELETE")
            }
        }
        ["consumers", name, "messages"] if !name.is_empty() => {
            let name = decode_segment(name)?;
            if get {
                Ok(Endpoint::Iep04ConsumerMessages(name))
            } else {
                wrong("GET")
            }
        }
        ["consumers", name, "ack"] if !name.is_empty() => {
            let name = decode_segment(name)?;
            if post {
                Ok(Endpoint::Iep04ConsumerAck(name))
            } else {
                wrong("POST")
            }
        }
        ["status"] if get => Ok(Endpoint::Iep04Status),
        ["status"] => wrong("GET"),
        ["peers", "redeem"] if post => Ok(Endpoint::Iep04Redeem),
        ["peers"] if get => Ok(Endpoint::Iep04Peers),
        ["peers"] => wrong("GET"),
        ["peers", name] if !name.is_empty() => {
            let name = decode_segment(name)?;
            if get {
                Ok(Endpoint::Iep04Peer(name))
            } else {
                wrong("GET")
            }
        }
        _ => Err(ApiError::NoRoute(path.to_owned())),
    }
}

/// The `/taxii2/` routes (a trailing `/` is optional): route first (404), then method (405).
fn parse_taxii(method: &Method, path: &str, rest: &str) -> Result<Endpoint, ApiError> {
    use crate::cmd::taxii::TaxiiRoute as T;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let route = match parts.as_slice() {
        [""] => T::Discovery,
        ["api"] => T::ApiRoot,
        ["api", "collections"] => T::Collections,
        ["api", "collections", id] if !id.is_empty() => T::Collection(decode_segment(id)?),
        ["api", "collections", id, "objects"] if !id.is_empty() => T::Objects(decode_segment(id)?),
        ["api", "collections", id, "manifest"] if !id.is_empty() => {
            T::Manifest(decode_segment(id)?)
        }
        _ => return Err(ApiError::NoRoute(path.to_owned())),
    };
    if *method == Method::GET || *method == Method::HEAD {
        Ok(Endpoint::Taxii(route))
    } else {
        Err(ApiError::Method(method.to_string(), "GET"))
    }
}

/// Parses method and path. HEAD is served as GET.
pub fn parse_endpoint(method: &Method, path: &str) -> Result<Endpoint, ApiError> {
    if let Some(rest) = path.strip_prefix("/iep04/") {
        return parse_iep04(method, path, rest);
    }
    if path == "/_management" || path.starts_with("/_management/") {
        let (route, is_post) = match path
            .trim_start_matches("/_management")
            .trim_start_matches('/')
        {
            "" => (ConsoleRoute::Page, false),
            "app.js" => (ConsoleRoute::Script, false),
            "app.css" => (ConsoleRoute::Style, false),
            "login" => (ConsoleRoute::Login, true),
            "logout" => (ConsoleRoute::Logout, true),
            "session" => (ConsoleRoute::Session, false),
            "overview" => (ConsoleRoute::Overview, false),
            _ => return Err(ApiError::NoRoute(path.to_owned())),
        };
        let get = *method == Method::GET || *method == Method::HEAD;
        return match (is_post, *method == Method::POST, get) {
            (true, true, _) | (false, _, true) => Ok(Endpoint::Console(route)),
            (true, _, _) => Err(ApiError::Method(method.to_string(), "POST")),
            (false, _, _) => Err(ApiError::Method(method.to_string(), "GET")),
        };
    }
    if let Some(rest) = path.strip_prefix("/taxii2") {
        if rest.is_empty() || rest.starts_with('/') {
            return parse_taxii(method, path, rest.trim_start_matches('/'));
        }
    }
    let get = *method == Method::GET || *method == Method::HEAD;
    let post = *method == Method::POST;
    let wrong = |allow: &'static str| Err(ApiError::Method(method.to_string(), allow));
    if let Some(id) = path.strip_prefix("/_api/keys/") {
        let id = decode_segment(id)?;
        return match *method {
            _ if id.is_empty() || id.contains('/') => Err(ApiError::NoRoute(path.to_owned())),
            Method::PATCH => Ok(Endpoint::KeysUpdate(id)),
            Method::DELETE => Ok(Endpoint::KeysRevoke(id)),
            _ => wrong("PATCH, DELETE"),
        };
    }
    if path == "/_api/keys" {
        return if get {
            Ok(Endpoint::KeysList)
        } else if post {
            Ok(Endpoint::KeysCreate)
        } else {
            wrong("GET, POST")
        };
    }
    for (prefix, build) in [
        ("/w/", Endpoint::Write as fn(String) -> Endpoint),
        ("/r/", Endpoint::Read),
        ("/rs/", Endpoint::ReadStats),
    ] {
        if let Some(rest) = path.strip_prefix(prefix) {
            return if get {
                Ok(build(decode_path(rest)?))
            } else {
                wrong("GET")
            };
        }
    }
    if let Some(rest) = path.strip_prefix("/stix/") {
        return if get {
            Ok(Endpoint::Stix(decode_path(rest)?))
        } else {
            wrong("GET")
        };
    }
    if let Some(rest) = path.strip_prefix("/d/") {
        return if get || post {
            Ok(Endpoint::Delete(decode_path(rest)?))
        } else {
            wrong("GET, POST")
        };
    }
    if let Some(rest) = path.strip_prefix("/c/") {
        let ns = decode_path(rest)?;
        return if get {
            Ok(Endpoint::ConfigGet(ns))
        } else if post {
            Ok(Endpoint::ConfigSet(ns))
        } else {
            wrong("GET, POST")
        };
    }
    let (endpoint, is_post) = match path {
        "/wb" => (Endpoint::BulkWrite, true),
        "/vwb" => (Endpoint::BulkValidate, true),
        "/rb" => (Endpoint::BulkRead(false), true),
        "/rbs" => (Endpoint::BulkRead(true), true),
        "/i" => (Endpoint::Info, false),
        "/health" => (Endpoint::Health, false),
        "/_api/latest" => (Endpoint::Latest, false),
        "/_api/namespaces" => (Endpoint::Namespaces, false),
        "/_api/who" => (Endpoint::Who, false),
        "/_api/openapi.yaml" => (Endpoint::OpenApi, false),
        "/_api/peers/invite" => (Endpoint::PeersInvite, true),
        "/_api/merge" => (Endpoint::Galaxy(false), true),
        "/metrics" => (Endpoint::Metrics, false),
        "/_api/tier" => (Endpoint::Galaxy(true), true),
        "/_api/peers/join" => (Endpoint::PeersJoin, true),
        "/_api/stix" => (Endpoint::StixApi, true),
        "/" => (Endpoint::Help, false),
        "/w" | "/r" | "/rs" | "/d" | "/c" | "/stix" => {
            return Err(ApiError::BadRequest(format!(
                "{path} needs a namespace: {path}/<namespace>"
            )))
        }
        _ => return Err(ApiError::NoRoute(path.to_owned())),
    };
    match (is_post, post, get) {
        (true, true, _) | (false, _, true) => Ok(endpoint),
        (true, _, _) => wrong("POST"),
        (false, _, _) => wrong("GET"),
    }
}

/// The plain-text help page.
pub fn help_text() -> String {
    let mut s = format!(
        "sighthub {} — SightingDB-compatible sighting server\n\nRoutes:\n",
        env!("CARGO_PKG_VERSION")
    );
    let mw = ROUTES.iter().map(|(m, _, _)| m.len()).max().unwrap_or(0);
    let pw = ROUTES.iter().map(|(_, p, _)| p.len()).max().unwrap_or(0);
    for (m, p, d) in ROUTES {
        s.push_str(&format!("  {m:<mw$} {p:<pw$}  {d}\n"));
    }
    s
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn parses_routes() {
        assert_eq!(
            parse_endpoint(&Method::GET, "/w/a%2Fb/c").ok(),
            Some(Endpoint::Write("a/b/c".into()))
        );
        assert_eq!(
            parse_endpoint(&Method::GET, "/w/").ok(),
            Some(Endpoint::Write(String::new()))
        );
        assert_eq!(
            parse_endpoint(&Method::POST, "/d/x").ok(),
            Some(Endpoint::Delete("x".into()))
        );
        assert_eq!(
            parse_endpoint(&Method::HEAD, "/i").ok(),
            Some(Endpoint::Info)
        );
        assert_eq!(
            parse_endpoint(&Method::POST, "/rbs").ok(),
            Some(Endpoint::BulkRead(true))
        );
        assert!(matches!(
            parse_endpoint(&Method::GET, "/wb"),
            Err(ApiError::Method(..))
        ));
        assert!(matches!(
            parse_endpoint(&Method::POST, "/r/x"),
            Err(ApiError::Method(..))
        ));
        assert!(matches!(
            parse_endpoint(&Method::DELETE, "/d/x"),
            Err(ApiError::Method(..))
        ));
        assert!(matches!(
            parse_endpoint(&Method::GET, "/nope"),
            Err(ApiError::NoRoute(_))
        ));
        assert!(matches!(
            parse_endpoint(&Method::GET, "/w/%ff"),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn parses_iep04_routes() {
        let p = |m: Method, path: &str| parse_endpoint(&m, path);
        assert_eq!(
            p(Method::POST, "/iep04/messages").ok(),
            Some(Endpoint::Iep04Publish)
        );
        assert_eq!(
            p(Method::HEAD, "/iep04/messages").ok(),
            Some(Endpoint::Iep04Read)
        );
        assert_eq!(
            p(Method::GET, "/iep04/messages/a%2Fb").ok(),
            Some(Endpoint::Iep04Message("a/b".into()))
        );
        assert_eq!(
            p(Method::GET, "/iep04/links").ok(),
            Some(Endpoint::Iep04LinksByAlternate)
        );
        assert_eq!(
            p(Method::GET, "/iep04/links/x").ok(),
            Some(Endpoint::Iep04Links("x".into()))
        );
        assert_eq!(
            p(Method::DELETE, "/iep04/consumers/c").ok(),
            Some(Endpoint::Iep04ConsumerDelete("c".into()))
        );
        assert_eq!(
            p(Method::GET, "/iep04/consumers/c/messages").ok(),
            Some(Endpoint::Iep04ConsumerMessages("c".into()))
        );
        assert_eq!(
            p(Method::POST, "/iep04/consumers/c/ack").ok(),
            Some(Endpoint::Iep04ConsumerAck("c".into()))
        );
        assert_eq!(
            p(Method::GET, "/iep04/status").ok(),
            Some(Endpoint::Iep04Status)
        );
        for (m, path, allow) in [
            (Method::PUT, "/iep04/messages", "GET, POST"),
            (Method::POST, "/iep04/consumers/c", "GET, DELETE"),
            (Method::GET, "/iep04/consumers/c/ack", "POST"),
            (Method::POST, "/iep04/status", "GET"),
        ] {
            match p(m, path) {
                Err(ApiError::Method(_, a)) => assert_eq!(a, allow, "{path}"),
                other => panic!("{path}: {other:?}"),
            }
        }
        for path in [
            "/iep04/",
            "/iep04/nope",
            "/iep04/messages/",
            "/iep04/consumers//ack",
        ] {
            assert!(
                matches!(p(Method::GET, path), Err(ApiError::NoRoute(_))),
                "{path}"
            );
        }
        assert!(matches!(
            p(Method::GET, "/iep04/messages/%ff"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            p(Method::GET, "/iep04/messages"),
            Ok(Endpoint::Iep04Read)
        ));
        assert!(matches!(p(Method::GET, "/i"), Ok(Endpoint::Info)));
    }

    /// One table for both APIs: every route of the table parses to the endpoint whose
    /// pattern it is, and every endpoint's pattern is in the table (so on the help page and,
    /// by the test below, in the OpenAPI document).
    #[test]
    fn the_route_table_and_the_endpoints_agree() {
        for (method, path, _) in ROUTES {
            let m = Method::from_bytes(method.as_bytes()).expect("method");
            let concrete = path
                .replace("{namespace}", "ns")
                .replace("{uuid}", "u")
                .replace("{name}", "n");
            let e = parse_endpoint(&m, &concrete).expect("a route of the table parses");
            if *path == "/d/{namespace}" && *method == "POST" {
                // The Python client's form of the delete.
                assert_eq!(e, Endpoint::Delete("ns".into()));
                continue;
            }
            assert_eq!(e.pattern(), (*method, *path), "{method} {path}");
        }
        let s = String::new;
        for e in [
            Endpoint::Write(s()),
            Endpoint::Read(s()),
            Endpoint::ReadStats(s()),
            Endpoint::BulkWrite,
            Endpoint::BulkValidate,
            Endpoint::BulkRead(false),
            Endpoint::BulkRead(true),
            Endpoint::Delete(s()),
            Endpoint::ConfigGet(s()),
            Endpoint::ConfigSet(s()),
            Endpoint::Info,
            Endpoint::Health,
            Endpoint::Latest,
            Endpoint::Namespaces,
            Endpoint::Who,
            Endpoint::OpenApi,
            Endpoint::Help,
            Endpoint::Iep04Publish,
            Endpoint::Iep04Read,
            Endpoint::Iep04Message(s()),
            Endpoint::Iep04Links(s()),
            Endpoint::Iep04LinksByAlternate,
            Endpoint::Iep04Consumer(s()),
            Endpoint::Iep04ConsumerDelete(s()),
            Endpoint::Iep04ConsumerMessages(s()),
            Endpoint::Iep04ConsumerAck(s()),
            Endpoint::Iep04Status,
        ] {
            let (m, p) = e.pattern();
            assert!(
                ROUTES.iter().any(|(rm, rp, _)| (*rm, *rp) == (m, p)),
                "{m} {p} ({e:?}) is missing from ROUTES"
            );
        }
    }

    #[test]
    fn the_help_page_lists_every_route_in_columns() {
        let text = help_text();
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("  ")).collect();
        assert_eq!(rows.len(), ROUTES.len());
        let column = |row: &str, d: &str| row.find(d).unwrap_or(0);
        let first = column(rows[0], ROUTES[0].2);
        for (row, (_, p, d)) in rows.iter().zip(ROUTES) {
            assert!(row.contains(p), "{row}");
            assert_eq!(column(row, d), first, "{row}");
        }
        assert!(text.contains("/_api/who"));
    }

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let doc = crate::OPENAPI_YAML;
        let paths: Vec<&str> = doc
            .lines()
            .filter(|l| l.starts_with("  /") && l.trim_end().ends_with(':'))
            .map(|l| {
                l.trim()
                    .trim_end_matches(':')
                    .trim_matches('\'')
                    .trim_matches('"')
            })
            .collect();
        for (method, path, _) in ROUTES {
            assert!(
                paths.contains(path),
                "{path} is missing from openapi.yaml paths"
            );
            // The method must appear under that path.
            let start = doc
                .find(&format!("  {path}:"))
                .unwrap_or_else(|| doc.find(&format!("  '{path}':")).unwrap_or(0));
            let section = &doc[start..];
            let end = section[3..].find("\n  /").map_or(section.len(), |e| e + 3);
            let method_key = format!("    {}:", method.to_lowercase());
            assert!(
                section[..end].contains(&method_key),
                "{method} {path} is missing from openapi.yaml"
            );
        }
    }
}
