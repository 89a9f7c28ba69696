//! Typed errors of the store.

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage engine failed (I/O, corruption the engine detected).
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(&'static str),
    /// A previous fsync failed; the store refuses writes until restarted.
    #[error("store is poisoned after a failed fsync; restart required")]
    Poisoned,
    /// The namespace already holds values, so its value format cannot change.
    #[error("namespace '{0}' already holds values; its value format cannot change")]
    FormatConflict(String),
    /// Other processes kept changing the same values, so an operation could not be applied
    /// within its bounded retries (a shared engine only). Retryable.
    #[error("the values kept changing under concurrent writers; nothing of this operation was applied to them; retry")]
    Contended,
    /// A remote engine failed or cannot be reached (cluster down, timeout, refused
    /// credentials): what went wrong, for the operator. Retryable once the engine is back.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// I/O outside the engine (data directory).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<sighthub_storage::Error> for Error {
    fn from(e: sighthub_storage::Error) -> Self {
        match e {
            sighthub_storage::Error::Engine(e) => Self::Engine(e),
            sighthub_storage::Error::Io(e) => Self::Io(e),
            // `Poisoned`, and anything the shared crate adds later: the storage cannot be
            // trusted to have kept the write.
            _ => Self::Poisoned,
        }
    }
}

/// Result with the store's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Why one item of a write was refused (the rest of a bulk write goes on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ItemError {
    /// Empty values are never stored.
    #[error("Refusing to write an empty value.")]
    EmptyValue,
    /// Private namespaces are written by the engine only.
    #[error("'{0}' is an internal namespace and is not writable from outside.")]
    Internal(String),
    /// The value is longer than [`crate::store::MAX_VALUE_LEN`] bytes (its length is given).
    #[error("Value is {0} bytes long; the limit is {max} bytes (MAX_VALUE_LEN).", max = crate::store::MAX_VALUE_LEN)]
    ValueTooLong(usize),
    /// The timestamp is outside the supported range.
    #[error("Timestamp out of range: {0}")]
    TimestampOutOfRange(i64),
    /// More tags in one write than [`crate::store::Limits::max_tags_per_item`] (given).
    #[error("Too many tags in one write; the limit is {0} (max_tags_per_item).")]
    TooManyTags(usize),
    /// A tag longer than [`crate::store::Limits::max_tag_len`] bytes (given).
    #[error("A tag is longer than {0} bytes (max_tag_len).")]
    TagTooLong(usize),
    /// The value would hold more tags than [`crate::store::Limits::max_tags_per_value`].
    #[error("The value would hold more than {0} tags (max_tags_per_value).")]
    TooManyTagsOnValue(usize),
}

impl ItemError {
    /// The HTTP status that fits this refusal: 413 for the size limits, 403 for a private
    /// namespace, 400 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::ValueTooLong(_)
            | Self::TooManyTags(_)
            | Self::TagTooLong(_)
            | Self::TooManyTagsOnValue(_) => 413,
            Self::Internal(_) => 403,
            Self::EmptyValue | Self::TimestampOutOfRange(_) => 400,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn shared_storage_errors_keep_their_kind() {
        assert!(matches!(
            Error::from(sighthub_storage::Error::Poisoned),
            Error::Poisoned
        ));
        assert!(matches!(
            Error::from(sighthub_storage::Error::Io(std::io::Error::other("disk"))),
            Error::Io(_)
        ));
    }
}
