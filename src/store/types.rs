//! What goes into the store and what comes back: request arguments, outcomes,
//! errors, per-item metadata, and the store's counters.

use std::sync::atomic::AtomicU64;

use crate::memory::region::Backing;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
}

/// One storage request, whichever protocol it came in.
#[derive(Clone, Copy, Debug)]
pub struct SetArgs<'a> {
    pub mode: SetMode,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub flags: u32,
    /// memcached convention (see `absolute_expiry`).
    pub exptime: i64,
    /// Compare-and-swap against this CAS; 0 = unconditional.
    pub cas: u64,
    /// Meta `ms I`: a CAS older than the item's stores the value as stale
    /// instead of failing.
    pub invalidate: bool,
    /// Meta `ms N`: append/prepend to a missing key creates it with this exptime.
    pub vivify: Option<i64>,
    /// Meta `ms b`: the key came base64-encoded, and a new item (not an
    /// append or prepend, as memcached) remembers it (`ItemMeta::key_binary`).
    pub key_binary: bool,
}

impl<'a> SetArgs<'a> {
    pub fn new(mode: SetMode, key: &'a [u8], value: &'a [u8], flags: u32, exptime: i64) -> Self {
        SetArgs { mode, key, value, flags, exptime, cas: 0, invalidate: false, vivify: None, key_binary: false }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetOutcome {
    Stored {
        cas: u64,
    },
    NotStored,
    /// CAS mismatch.
    Exists,
    /// CAS given and no such item.
    NotFound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    Exists,
}

#[derive(Clone, Copy, Debug)]
pub struct ArithArgs<'a> {
    pub key: &'a [u8],
    pub incr: bool,
    pub delta: u64,
    /// Compare-and-swap (binary, meta); 0 = unconditional.
    pub cas: u64,
    /// Create on miss with (initial value, exptime) — binary and meta `N`.
    pub initial: Option<(u64, i64)>,
    /// Also set a new expiry (meta `T`).
    pub new_exptime: Option<i64>,
}

/// Absolute expiries around an arithmetic update (`Store::arith_ex`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArithExpiry {
    pub before: u32,
    pub after: u32,
    /// The miss created the item (binary initial value, meta `N`).
    pub created: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOutcome {
    Value { value: u64, cas: u64 },
    NotFound,
    NonNumeric,
    Exists,
}

/// A replicated record could not be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyError {
    Log(crate::log::RawError),
}

/// Why a write was not performed at all (as opposed to NOT_STORED & co).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// This process is a read-only replica.
    ReadOnly,
    /// Value larger than `-I` or than the log can hold.
    TooLarge,
    /// The key is empty or longer than 250 bytes.
    BadKey,
    /// This primary was superseded by a promoted replica (a higher epoch):
    /// it refuses writes rather than fork history.
    Fenced,
    /// Written, but fewer than `--sync-replicas` replicas confirmed it within
    /// `--sync-timeout`.
    NotReplicated,
    /// `-M`: storing it would reclaim a live item; nothing was written.
    NoMemory,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreError::ReadOnly => "read-only replica",
            StoreError::TooLarge => "object too large for cache",
            StoreError::BadKey => "bad key",
            StoreError::Fenced => "stale primary: a replica was promoted to a newer epoch; writes refused",
            StoreError::NotReplicated => "stored, but not confirmed by the required replicas in time",
            StoreError::NoMemory => "out of memory storing object",
        })
    }
}

/// What a read learns about an item besides its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemMeta {
    pub flags: u32,
    pub cas: u64,
    /// Absolute expiry, 0 = never.
    pub expiry: u32,
    pub value_len: u32,
    /// Unix seconds of the previous access (before this read).
    pub last_access: u32,
    /// Had been fetched before this read.
    pub fetched: bool,
    pub stale: bool,
    /// This read is the first to see the item since a win token was due (meta).
    pub win: bool,
    /// A win token was already handed out to someone else.
    pub win_taken: bool,
    /// Stored with a base64 key (meta `ms b`): `mg` and `me` echo it so.
    pub key_binary: bool,
}

/// memcached's size of an item (`me`, metadump, `stats sizes`): its header,
/// CAS, key + NUL, value + CRLF, and the flags if any.
pub fn memcached_item_size(key_len: usize, m: &ItemMeta) -> usize {
    48 + 8 + key_len + 1 + m.value_len as usize + 2 + if m.flags != 0 { 4 } else { 0 }
}

/// What meta `mg` asks of the store besides a plain read.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetaGetArgs {
    /// Copy the value out.
    pub value: bool,
    /// Record the access (`mg` without `u`).
    pub note_access: bool,
    /// `N`: on a miss, create an empty item with this exptime and win.
    pub vivify: Option<i64>,
    /// `T`: a new exptime for the item.
    pub touch: Option<i64>,
    /// `T` comes after `N` on the line (it then sets a created item's expiry).
    pub touch_after_vivify: bool,
    /// `R`: win if the item expires before this exptime would.
    pub recache: Option<i64>,
    /// `T` comes before `R` on the line (`R` then judges the new expiry).
    pub touch_before_recache: bool,
}

/// What `meta_get` learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaGet {
    /// The item as it is now (after any `T`); `expiry` is the new one.
    pub item: ItemMeta,
    /// A win token had already been handed out (meta `Z`).
    pub token_sent: bool,
    /// This request won the token (meta `W`).
    pub win: bool,
    /// `N` created the item.
    pub created: bool,
    /// Absolute expiry before `T`/`N` changed it (0 for a created item).
    pub expiry_before: u32,
    /// The store's clock at the read (for relative times).
    pub now: u32,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOpts {
    /// Copy the value out (meta `mg` without `v` does not).
    pub value: bool,
    /// Record the access (off on replicas: reads change nothing there).
    pub note_access: bool,
}

/// Counters the store keeps itself (the workers keep per-command counters;
/// the index keeps `curr_items` and `bytes`, see `crate::index`).
#[derive(Default)]
pub struct StoreStats {
    pub total_items: AtomicU64,
    pub evictions: AtomicU64,
    /// Writes refused under `-M` (memcached's `outofmemory`).
    pub outofmemory: AtomicU64,
    pub evicted_unfetched: AtomicU64,
    /// Evictions of items that had an expiry (memcached's `evicted_nonzero`).
    pub evicted_nonzero: AtomicU64,
    /// Seconds since the last evicted item was last accessed (memcached's
    /// `evicted_time`).
    pub evicted_time: AtomicU64,
    pub expired_unfetched: AtomicU64,
    pub reclaimed: AtomicU64,
    pub records_appended: AtomicU64,
    /// Writes whose `--sync-replicas` wait timed out.
    pub sync_timeouts: AtomicU64,
}

/// A point-in-time copy of the store's state for `stats`.
#[derive(Clone, Debug)]
pub struct StoreSnapshot {
    pub curr_items: u64,
    pub total_items: u64,
    pub bytes: u64,
    pub evictions: u64,
    pub outofmemory: u64,
    pub evicted_unfetched: u64,
    pub evicted_nonzero: u64,
    pub evicted_time: u64,
    pub expired_unfetched: u64,
    pub reclaimed: u64,
    pub records_appended: u64,
    pub sync_timeouts: u64,
    pub log_capacity: u64,
    /// Bytes of the index's tables, beside the log (`hash_bytes`).
    pub index_bytes: u64,
    pub log_head: u64,
    pub log_tail: u64,
    pub epoch: u64,
    pub backing: Backing,
    pub limit_maxbytes: u64,
    pub max_item_size: u64,
}
