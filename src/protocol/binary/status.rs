//! Binary response status codes and the messages memcached sends with them.

pub const SUCCESS: u16 = 0x0000;
pub const KEY_ENOENT: u16 = 0x0001;
pub const KEY_EEXISTS: u16 = 0x0002;
pub const E2BIG: u16 = 0x0003;
pub const EINVAL: u16 = 0x0004;
pub const NOT_STORED: u16 = 0x0005;
pub const DELTA_BADVAL: u16 = 0x0006;
/// memcached's "Auth failure.": also its answer to a flush under `-F`.
pub const AUTH_ERROR: u16 = 0x0020;
pub const UNKNOWN_COMMAND: u16 = 0x0081;
pub const ENOMEM: u16 = 0x0082;
/// Our read-only replica refusing a write (see `READ_ONLY_MESSAGE`).
pub const NOT_SUPPORTED: u16 = 0x0083;
/// memcached's "temporary failure": a write not confirmed by `--sync-replicas` in time.
pub const ETMPFAIL: u16 = 0x0086;

/// Body of a read-only refusal. Status 0x83 "not supported" is an error
/// every client surfaces as such (quiet commands report it too) and, unlike
/// NOT_STORED, it does not read as a lost race on a key.
pub const READ_ONLY_MESSAGE: &str = "read-only replica";

/// memcached's body text for an error status.
pub fn message(status: u16) -> &'static str {
    match status {
        KEY_ENOENT => "Not found",
        KEY_EEXISTS => "Data exists for key.",
        E2BIG => "Too large.",
        EINVAL => "Invalid arguments",
        NOT_STORED => "Not stored.",
        DELTA_BADVAL => "Non-numeric server-side value for incr or decr",
        AUTH_ERROR => "Auth failure.",
        UNKNOWN_COMMAND => "Unknown command",
        ENOMEM => "Out of memory",
        NOT_SUPPORTED => READ_ONLY_MESSAGE,
        _ => "",
    }
}
