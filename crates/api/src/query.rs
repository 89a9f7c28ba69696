//! Query-string decoding for the GET routes.
//!
//! Form-decoded (`+` is a space, `%2B` a plus), strict where SightingDB is strict: a
//! parameter given twice is refused, numbers must be integers, and decoded text must be
//! UTF-8. `noshadow` and `count` are presence flags (`&noshadow`, `&noshadow=`, even
//! `&noshadow=false` set them). Unknown parameters are ignored.

use std::borrow::Cow;

/// The parameters sighthub understands.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Query {
    /// `val=`: the value.
    pub val: Option<String>,
    /// `timestamp=`: unix seconds (0 means now).
    pub timestamp: Option<i64>,
    /// `ttl=`: seconds.
    pub ttl: Option<u64>,
    /// `tags=`: `,` or `;` separated.
    pub tags: Option<String>,
    /// `noshadow`: do not raise a shadow sighting.
    pub noshadow: bool,
    /// `count`: count a namespace instead of listing it.
    pub count: bool,
    /// `limit=`: page size.
    pub limit: Option<u64>,
    /// `after=`: listing cursor.
    pub after: Option<String>,
    /// `since=`: for `/_api/latest`.
    pub since: Option<i64>,
    /// `namespace=`: prefix filter for `/_api/latest`.
    pub namespace: Option<String>,
    /// `for_merge`: SightingDB's galaxy synchronisation shape, refused (501) rather than
    /// ignored, so that a galaxy node never takes a plain view for a per-node one.
    pub for_merge: bool,
}

/// Why a query string was refused; the message is SightingDB's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid query string: {0}")]
pub struct QueryError(pub String);

fn deser(msg: impl std::fmt::Display) -> QueryError {
    QueryError(format!("Query deserialize error: {msg}"))
}

/// Percent- and plus-decodes one component, refusing invalid UTF-8.
pub fn decode_component(s: &str) -> Result<Cow<'_, str>, QueryError> {
    let plus_free: Cow<'_, str> = if s.contains('+') {
        Cow::Owned(s.replace('+', " "))
    } else {
        Cow::Borrowed(s)
    };
    if !plus_free.contains('%') {
        return Ok(plus_free);
    }
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(&plus_free).collect();
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| QueryError("invalid UTF-8 in a decoded parameter".into()))
}

fn set<T>(slot: &mut Option<T>, name: &str, v: T) -> Result<(), QueryError> {
    if slot.is_some() {
        return Err(deser(format!("duplicate field `{name}`")));
    }
    *slot = Some(v);
    Ok(())
}

fn int<T: std::str::FromStr>(v: &str) -> Result<T, QueryError>
where
    T::Err: std::fmt::Display,
{
    v.parse::<T>().map_err(deser)
}

impl Query {
    /// Parses a raw query string (without the `?`).
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        let mut q = Query::default();
        let (mut noshadow, mut count, mut for_merge) = (None, None, None);
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode_component(k)?;
            let v = decode_component(v)?;
            match k.as_ref() {
                "val" => set(&mut q.val, "val", v.into_owned())?,
                "timestamp" => set(&mut q.timestamp, "timestamp", int(&v)?)?,
                "ttl" => set(&mut q.ttl, "ttl", int(&v)?)?,
                "tags" => set(&mut q.tags, "tags", v.into_owned())?,
                "noshadow" => set(&mut noshadow, "noshadow", ())?,
                "count" => set(&mut count, "count", ())?,
                "for_merge" => set(&mut for_merge, "for_merge", ())?,
                "limit" => set(&mut q.limit, "limit", int(&v)?)?,
                "after" => set(&mut q.after, "after", v.into_owned())?,
                "since" => set(&mut q.since, "since", int(&v)?)?,
                "namespace" => set(&mut q.namespace, "namespace", v.into_owned())?,
                _ => {}
            }
        }
        q.noshadow = noshadow.is_some();
        q.count = count.is_some();
        q.for_merge = for_merge.is_some();
        Ok(q)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn decodes_forms() {
        let q = Query::parse("val=a+b%2Bc&timestamp=-5&ttl=60&tags=x,y&noshadow=false&count")
            .expect("parses");
        assert_eq!(q.val.as_deref(), Some("a b+c"));
        assert_eq!(q.timestamp, Some(-5));
        assert_eq!(q.ttl, Some(60));
        assert_eq!(q.tags.as_deref(), Some("x,y"));
        assert!(q.noshadow && q.count);
        assert_eq!(Query::parse("").expect("empty"), Query::default());
        assert_eq!(
            Query::parse("val=").expect("empty val").val.as_deref(),
            Some("")
        );
    }

    #[test]
    fn refuses_like_sightingdb() {
        assert_eq!(
            Query::parse("val=a&val=b").map_err(|e| e.to_string()),
            Err("Invalid query string: Query deserialize error: duplicate field `val`".into())
        );
        assert_eq!(
            Query::parse("timestamp=soon").map_err(|e| e.to_string()),
            Err(
                "Invalid query string: Query deserialize error: invalid digit found in string"
                    .into()
            )
        );
        assert!(Query::parse("ttl=-1").is_err());
        assert!(Query::parse("val=%ff").is_err());
        assert!(Query::parse("timestamp=99999999999999999999999").is_err());
    }
}
