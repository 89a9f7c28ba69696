//! What a fjall database reports about its own work (memtables, flushes, compactions,
//! journals, disk, cache), read in one place for both cores' fjall adapters and shown by
//! `GET /metrics`.

/// A copy of a fjall database's activity counters and sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Bytes in memtables (active and sealed), not yet flushed.
    pub write_buffer_bytes: u64,
    /// Sealed memtables waiting to be flushed.
    pub flushes_pending: u64,
    /// Compactions running now.
    pub compactions_active: u64,
    /// Compactions finished since the database was opened.
    pub compactions_completed: u64,
    /// Time spent compacting since it was opened, in microseconds.
    pub compaction_micros: u64,
    /// Journal files on disk.
    pub journals: u64,
    /// Bytes of those journals.
    pub journal_bytes: u64,
    /// Bytes of the whole database on disk (tables and journals).
    pub disk_bytes: u64,
    /// Bytes in the block cache, and its capacity.
    pub cache_bytes: u64,
    /// The block cache's capacity.
    pub cache_capacity: u64,
}

/// Reads `db`'s counters (a sum over its keyspaces for the sizes; cheap: no I/O beyond the
/// sizes fjall keeps).
pub fn of(db: &fjall::Database) -> EngineStats {
    let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
    EngineStats {
        write_buffer_bytes: db.write_buffer_size(),
        flushes_pending: n(db.outstanding_flushes()),
        compactions_active: n(db.active_compactions()),
        compactions_completed: n(db.compactions_completed()),
        compaction_micros: u64::try_from(db.time_compacting().as_micros()).unwrap_or(u64::MAX),
        journals: n(db.journal_count()),
        journal_bytes: db.journal_disk_space().unwrap_or(0),
        disk_bytes: db.disk_space().unwrap_or(0),
        cache_bytes: db.cache_size(),
        cache_capacity: db.cache_capacity(),
    }
}
