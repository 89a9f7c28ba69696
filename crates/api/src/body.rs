//! The one reader of request bodies, for every handler of both APIs.
//!
//! [`BodyReader`] enforces the size limit twice (a declared `Content-Length` over it is
//! refused before a byte is read; the bytes counted as they arrive are refused past it) and
//! turns the body deadline of [`crate::deadline::DeadlineBody`] into a 408. A handler either
//! reads the body whole ([`BodyReader::collect`], [`read_json`]) or streams it chunk by
//! chunk ([`BodyReader::chunk`], the `/iep04/messages` publish). Which API's 413 and 400
//! bodies are answered is said by the [`Limit`]; the rule is the same for both.

use crate::deadline::BodyError;
use crate::error::ApiError;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::{header, HeaderMap};
use std::pin::Pin;

/// The size limit of a body and the API whose answers it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The sighting API: `max_body_bytes` (413 `{"message"}`; unreadable: 400 "Invalid JSON
    /// body").
    Sightings(usize),
    /// The `/iep04/` routes: `max_request_bytes` (413 with `limit` and `max`, "nothing was
    /// written").
    Exchange(usize),
}

impl Limit {
    /// The largest body, in bytes.
    pub fn max(self) -> usize {
        match self {
            Limit::Sightings(n) | Limit::Exchange(n) => n,
        }
    }

    fn too_large(self) -> ApiError {
        match self {
            Limit::Sightings(n) => ApiError::TooLarge(n),
            Limit::Exchange(n) => ApiError::request_too_large(n),
        }
    }

    fn unreadable(self) -> ApiError {
        ApiError::BadRequest(match self {
            Limit::Sightings(_) => "Invalid JSON body: truncated or unreadable body".into(),
            Limit::Exchange(_) => "Truncated or unreadable body.".into(),
        })
    }
}

/// A request body read within a [`Limit`].
pub struct BodyReader<B> {
    body: Pin<Box<B>>,
    limit: Limit,
    total: usize,
}

impl<B> BodyReader<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    /// A reader of `body`; refused at once when `headers` declare a length over the limit.
    pub fn new(headers: &HeaderMap, body: B, limit: Limit) -> Result<Self, ApiError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit.max() as u64) {
            return Err(limit.too_large());
        }
        Ok(Self {
            body: Box::pin(body),
            limit,
            total: 0,
        })
    }

    /// The next chunk of data, `None` at the end. Past the limit: 413; past the body
    /// deadline: 408; a broken connection: 400.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        while let Some(frame) = self.body.frame().await {
            let frame = frame.map_err(|e| self.read_error(e))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.total = self.total.saturating_add(data.len());
            if self.total > self.limit.max() {
                return Err(self.limit.too_large());
            }
            return Ok(Some(data));
        }
        Ok(None)
    }

    /// The whole body (one chunk is passed on without a copy).
    pub async fn collect(mut self) -> Result<Bytes, ApiError> {
        let Some(first) = self.chunk().await? else {
            return Ok(Bytes::new());
        };
        let Some(second) = self.chunk().await? else {
            return Ok(first);
        };
        let mut all = BytesMut::with_capacity(first.len() + second.len());
        all.extend_from_slice(&first);
        all.extend_from_slice(&second);
        while let Some(more) = self.chunk().await? {
            all.extend_from_slice(&more);
        }
        Ok(all.freeze())
    }

    fn read_error(&self, e: B::Error) -> ApiError {
        let e: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
        match e.downcast_ref::<BodyError>() {
            Some(BodyError::Deadline(secs)) => ApiError::BodyTimeout(*secs),
            _ => self.limit.unreadable(),
        }
    }
}

/// Reads a sighting-API JSON body whole within `max` bytes, checking its content type
/// (`application/json` or `…+json`).
pub async fn read_json<B>(req: hyper::Request<B>, max: usize) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let ct_ok = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let mime = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(false);
    if !ct_ok {
        return Err(ApiError::BadRequest(
            "Invalid JSON body: Content type error".into(),
        ));
    }
    let (parts, body) = req.into_parts();
    BodyReader::new(&parts.headers, body, Limit::Sightings(max))?
        .collect()
        .await
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::deadline::DeadlineBody;
    use hyper::body::Frame;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use crate::app::testkit::chunks;

    /// A body whose bytes never come.
    struct Never;

    impl Body for Never {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn the_limit_is_checked_on_the_declared_and_on_the_read_length() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_LENGTH,
            header::HeaderValue::from_static("11"),
        );
        assert!(matches!(
            BodyReader::new(&h, chunks(&[b"0123456789"]), Limit::Sightings(10)),
            Err(ApiError::TooLarge(10))
        ));
        let ok = BodyReader::new(
            &HeaderMap::new(),
            chunks(&[b"01234", b"", b"56789"]),
            Limit::Sightings(10),
        )
        .expect("reader")
        .collect()
        .await
        .expect("body");
        assert_eq!(&ok[..], b"0123456789");
        let over = BodyReader::new(
            &HeaderMap::new(),
            chunks(&[b"01234", b"56789"]),
            Limit::Exchange(9),
        )
        .expect("reader")
        .collect()
        .await
        .expect_err("too large");
        assert_eq!(over.status(), 413);
        assert_eq!(over.body()["limit"], "max_request_bytes");
        assert!(matches!(
            BodyReader::new(
                &HeaderMap::new(),
                chunks(&[b"0123456789", b"x"]),
                Limit::Sightings(10)
            )
            .expect("reader")
            .collect()
            .await,
            Err(ApiError::TooLarge(10))
        ));
    }

    /// The body deadline is a 408 in both APIs (the exchange's own reader answered it 400).
    #[tokio::test]
    async fn a_missed_deadline_is_a_408_in_both_apis() {
        for limit in [Limit::Sightings(100), Limit::Exchange(100)] {
            let (body, _) = DeadlineBody::new(Never, Duration::from_millis(10));
            let e = BodyReader::new(&HeaderMap::new(), body, limit)
                .expect("reader")
                .collect()
                .await
                .expect_err("deadline");
            assert_eq!(e.status(), 408, "{limit:?}");
        }
    }
}
