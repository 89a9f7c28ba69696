//! The crate's one error type.
//!
//! Every variant that concerns a message names the offending field as a dotted path
//! (`format`, `meta.uuid`, `meta.intelmq:related[2]`, `payload.raw`, `$` for the whole
//! message), so a peer can be told exactly what was wrong. Stream errors carry the 1-based
//! line number instead; a message error found on a line is wrapped in [`Error::AtLine`].

/// What can go wrong while reading, validating or decoding IEP04 messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not one well-formed JSON value.
    #[error("invalid JSON: {0}")]
    Json(#[source] serde_json::Error),

    /// A required field is absent.
    #[error("{field}: missing")]
    Missing {
        /// Dotted path of the field.
        field: String,
    },

    /// A field has the wrong JSON type.
    #[error("{field}: expected {expected}")]
    WrongType {
        /// Dotted path of the field.
        field: String,
        /// What was expected, e.g. `a string`.
        expected: &'static str,
    },

    /// A field that must hold a UUID does not.
    #[error("{field}: not a UUID")]
    NotUuid {
        /// Dotted path of the field.
        field: String,
    },

    /// A field is present and typed correctly but its value is not acceptable.
    #[error("{field}: {reason}")]
    Invalid {
        /// Dotted path of the field.
        field: String,
        /// Why the value was refused.
        reason: String,
    },

    /// A line of an ND-JSON stream is longer than the reader's limit.
    #[error("line {line}: longer than {max} bytes")]
    LineTooLong {
        /// 1-based line number.
        line: u64,
        /// The limit in force (bytes, without the line terminator).
        max: usize,
    },

    /// A line of an ND-JSON stream is not valid UTF-8.
    #[error("line {line}: invalid UTF-8 at byte {offset}")]
    InvalidUtf8 {
        /// 1-based line number.
        line: u64,
        /// Byte offset within the line of the first invalid sequence.
        offset: usize,
    },

    /// The stream ended inside a line that is not a complete JSON value.
    #[error(
        "line {line}: the body ends in the middle of a JSON value ({len} bytes of it arrived); \
         send each message whole, as one JSON value (one per line for ND-JSON)"
    )]
    TruncatedLine {
        /// 1-based line number.
        line: u64,
        /// Bytes of the incomplete line.
        len: usize,
    },

    /// A message error found on a given line of an ND-JSON stream.
    #[error("line {line}: {source}")]
    AtLine {
        /// 1-based line number.
        line: u64,
        /// The error of the message on that line.
        source: Box<Error>,
    },
}

impl Error {
    /// Dotted path of the field the error is about, if it is about one.
    ///
    /// ```
    /// let err = sighthub_iep04::Message::from_json(r#"{"version":1,"type":"event"}"#).unwrap_err();
    /// assert_eq!(err.field(), Some("format"));
    /// assert_eq!(err.to_string(), "format: missing");
    /// ```
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Missing { field }
            | Error::WrongType { field, .. }
            | Error::NotUuid { field }
            | Error::Invalid { field, .. } => Some(field),
            Error::AtLine { source, .. } => source.field(),
            Error::Json(_)
            | Error::LineTooLong { .. }
            | Error::InvalidUtf8 { .. }
            | Error::TruncatedLine { .. } => None,
        }
    }

    /// 1-based line number in an ND-JSON stream, for stream errors.
    pub fn line(&self) -> Option<u64> {
        match self {
            Error::LineTooLong { line, .. }
            | Error::InvalidUtf8 { line, .. }
            | Error::TruncatedLine { line, .. }
            | Error::AtLine { line, .. } => Some(*line),
            _ => None,
        }
    }

    pub(crate) fn missing(field: impl Into<String>) -> Self {
        Error::Missing {
            field: field.into(),
        }
    }

    pub(crate) fn wrong_type(field: impl Into<String>, expected: &'static str) -> Self {
        Error::WrongType {
            field: field.into(),
            expected,
        }
    }

    pub(crate) fn not_uuid(field: impl Into<String>) -> Self {
        Error::NotUuid {
            field: field.into(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn at_line(self, line: u64) -> Self {
        match self {
            // Stream errors already carry their line.
            e @ (Error::LineTooLong { .. }
            | Error::InvalidUtf8 { .. }
            | Error::TruncatedLine { .. }
            | Error::AtLine { .. }) => e,
            e => Error::AtLine {
                line,
                source: Box::new(e),
            },
        }
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_and_line_accessors() {
        let e = Error::not_uuid("meta.uuid").at_line(7);
        assert_eq!(e.field(), Some("meta.uuid"));
        assert_eq!(e.line(), Some(7));
        assert_eq!(e.to_string(), "line 7: meta.uuid: not a UUID");
        assert!(std::error::Error::source(&e).is_some());

        let e = Error::LineTooLong { line: 3, max: 10 }.at_line(99);
        assert_eq!(e.line(), Some(3), "stream errors keep their own line");
        assert_eq!(e.field(), None);
    }

    #[test]
    fn messages_name_the_field() {
        assert_eq!(Error::missing("format").to_string(), "format: missing");
        assert_eq!(
            Error::wrong_type("version", "an integer").to_string(),
            "version: expected an integer"
        );
        assert_eq!(
            Error::invalid("meta.compress", "unsupported \"lzma\"").to_string(),
            "meta.compress: unsupported \"lzma\""
        );
    }
}
