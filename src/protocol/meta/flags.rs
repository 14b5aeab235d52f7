//! The meta flags parser: tokens after the key (and, for `ms`, the length)
//! as memcached's `_meta_flag_preparse` reads them. A flag is the first
//! byte of its token; the rest is its argument (ignored where it takes none).

use super::base64;
use crate::protocol::text::parse;

/// memcached's limit on tokens per meta line (command, key, flags and the
/// tokenizer's end marker): beyond it, "options flags ... too long".
pub const MAX_TOKENS: usize = 20;
/// Longest opaque token (`O...`), the `O` included.
pub const MAX_OPAQUE_LEN: usize = 32;
/// Longest key as sent (before base64 decoding).
pub const MAX_KEY_LEN: usize = 250;

/// Split a command line on spaces, as memcached does (runs of spaces are
/// one separator; no other byte separates).
pub fn tokenize(line: &[u8]) -> Vec<&[u8]> {
    line.split(|&b| b == b' ').filter(|t| !t.is_empty()).collect()
}

/// Whether the line has more tokens than memcached accepts.
pub fn too_many(tokens: &[&[u8]]) -> bool {
    tokens.len() + 1 > MAX_TOKENS
}

/// What the flags asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MetaFlags {
    /// The key, base64-decoded when `b` was given.
    pub key: Vec<u8>,
    /// `b`: the key travels base64-encoded (and is echoed so by `k`).
    pub key_binary: bool,
    /// `v`
    pub value: bool,
    /// `q`: no reply for the nominal outcome.
    pub no_reply: bool,
    /// `u`: do not record the access.
    pub no_update: bool,
    /// `I`
    pub invalidate: bool,
    /// `N<exptime>`
    pub vivify: Option<i64>,
    /// `T<exptime>`
    pub ttl: Option<i64>,
    /// `R<exptime>`
    pub recache: Option<i64>,
    /// `F<flags>`
    pub client_flags: u32,
    /// `C<cas>`
    pub cas: Option<u64>,
    /// `M<mode>`
    pub mode: Option<u8>,
    /// `D<delta>`
    pub delta: Option<u64>,
    /// `J<initial>`
    pub initial: Option<u64>,
}

/// Parse `flags` (the tokens after the key, or after `ms`'s length) for
/// `key`. The error is memcached's reply line, without "\r\n".
pub fn parse(key: &[u8], flags: &[&[u8]]) -> Result<MetaFlags, &'static str> {
    let mut f = MetaFlags { key: key.to_vec(), ..MetaFlags::default() };
    let mut seen = [false; 128];
    // memcached notes an error and parses on (the last message wins),
    // except for duplicates and unknown flags, which stop it at once.
    let mut err: Option<&'static str> = None;
    const BAD_TOKEN: &str = "CLIENT_ERROR bad token in command line format";
    for tok in flags {
        let o = tok[0];
        if o >= 127 || seen[o as usize] {
            return Err("CLIENT_ERROR duplicate flag");
        }
        seen[o as usize] = true;
        let arg = &tok[1..];
        match o {
            b'b' => match base64::decode(key) {
                Some(k) => {
                    f.key = k;
                    f.key_binary = true;
                }
                None => err = Some("CLIENT_ERROR error decoding key"),
            },
            b'N' => match strtol(arg) {
                Some(t) => f.vivify = Some(t),
                None => err = Some(BAD_TOKEN),
            },
            b'T' => match strtol(arg) {
                Some(t) => f.ttl = Some(t),
                None => err = Some(BAD_TOKEN),
            },
            b'R' => match strtol(arg) {
                Some(t) => f.recache = Some(t),
                None => err = Some(BAD_TOKEN),
            },
            b'l' | b'O' | b'P' | b'L' | b'k' | b's' | b't' | b'c' | b'f' | b'h' => {}
            b'v' => f.value = true,
            b'u' => f.no_update = true,
            b'q' => f.no_reply = true,
            b'I' => f.invalidate = true,
            // memcached flags the error without a message of its own: the
            // command's default ("bad command line format") is what shows.
            b'F' => match strtoul(arg) {
                Some(v) => f.client_flags = v,
                None => err = Some(err.unwrap_or("CLIENT_ERROR bad command line format")),
            },
            b'C' => match strtoull(arg) {
                Some(v) => f.cas = Some(v),
                None => err = Some(BAD_TOKEN),
            },
            b'M' => {
                if tok.len() != 2 {
                    err = Some("CLIENT_ERROR incorrect length for M token");
                } else {
                    f.mode = Some(tok[1]);
                }
            }
            b'J' => match strtoull(arg) {
                Some(v) => f.initial = Some(v),
                None => err = Some("CLIENT_ERROR invalid numeric initial value"),
            },
            b'D' => match strtoull(arg) {
                Some(v) => f.delta = Some(v),
                None => err = Some("CLIENT_ERROR invalid numeric delta value"),
            },
            _ => return Err("CLIENT_ERROR invalid flag"),
        }
    }
    match err {
        Some(e) => Err(e),
        None => Ok(f),
    }
}

/// Whether any opaque token is longer than memcached allows.
pub fn opaque_too_long(flags: &[&[u8]]) -> bool {
    flags.iter().any(|t| t[0] == b'O' && t.len() > MAX_OPAQUE_LEN)
}

/// Position of the first token starting with `flag`.
pub fn position(flags: &[&[u8]], flag: u8) -> Option<usize> {
    flags.iter().position(|t| t[0] == flag)
}

/// memcached's safe_strtol: a long, stored into an int32 (C truncation).
/// Meta numbers use the same helpers as text commands in memcached, so the
/// same ones here.
pub fn strtol(s: &[u8]) -> Option<i64> {
    parse::safe_strtol(s).map(i64::from)
}

/// memcached's safe_strtoull: negative numbers are refused.
pub fn strtoull(s: &[u8]) -> Option<u64> {
    parse::safe_strtoull(s)
}

/// memcached's safe_strtoul: as strtoull, stored into a uint32.
pub fn strtoul(s: &[u8]) -> Option<u32> {
    parse::safe_strtoul(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<MetaFlags, &'static str> {
        let t = tokenize(line.as_bytes());
        parse(t[0], &t[1..])
    }

    #[test]
    fn tokenizer_collapses_spaces() {
        assert_eq!(tokenize(b"mg  foo   v k"), vec![&b"mg"[..], b"foo", b"v", b"k"]);
        assert!(tokenize(b"").is_empty());
    }

    #[test]
    fn numbers_and_modes() {
        let f = p("foo v q T30 N-1 R5 F7 C123 MA D5 J9 I u").unwrap();
        assert!(f.value && f.no_reply && f.invalidate && f.no_update);
        assert_eq!((f.ttl, f.vivify, f.recache), (Some(30), Some(-1), Some(5)));
        assert_eq!((f.client_flags, f.cas, f.mode), (7, Some(123), Some(b'A')));
        assert_eq!((f.delta, f.initial), (Some(5), Some(9)));
        assert_eq!(f.key, b"foo");
    }

    #[test]
    fn memcached_error_messages() {
        assert_eq!(p("foo v v"), Err("CLIENT_ERROR duplicate flag"));
        assert_eq!(p("foo x"), Err("CLIENT_ERROR invalid flag"));
        assert_eq!(p("foo E5"), Err("CLIENT_ERROR invalid flag"));
        assert_eq!(p("foo T"), Err("CLIENT_ERROR bad token in command line format"));
        assert_eq!(p("foo T1x"), Err("CLIENT_ERROR bad token in command line format"));
        assert_eq!(p("foo F-1"), Err("CLIENT_ERROR bad command line format"));
        assert_eq!(p("foo MEE"), Err("CLIENT_ERROR incorrect length for M token"));
        assert_eq!(p("foo D-5"), Err("CLIENT_ERROR invalid numeric delta value"));
        assert_eq!(p("foo Jx"), Err("CLIENT_ERROR invalid numeric initial value"));
        assert_eq!(p("foo b"), Err("CLIENT_ERROR error decoding key"));
        // The last recorded error wins; a duplicate stops at once.
        assert_eq!(p("foo b Tx"), Err("CLIENT_ERROR bad token in command line format"));
        assert_eq!(p("foo Tx v v"), Err("CLIENT_ERROR duplicate flag"));
        // Non-ASCII flag bytes count as duplicates in memcached.
        assert_eq!(parse(b"foo", &[&[0xff]]), Err("CLIENT_ERROR duplicate flag"));
    }

    #[test]
    fn base64_keys() {
        let f = p("Zm9v b k").unwrap();
        assert_eq!(f.key, b"foo");
        assert!(f.key_binary);
    }

    #[test]
    fn c_number_rules() {
        assert_eq!(strtol(b"+5"), Some(5));
        assert_eq!(strtol(b"-5"), Some(-5));
        assert_eq!(strtol(b""), None);
        assert_eq!(strtol(b"5 "), Some(5));
        assert_eq!(strtol(b"4294967296"), Some(0), "C truncation to int32");
        assert_eq!(strtoull(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(strtoull(b"18446744073709551616"), None);
        assert_eq!(strtoull(b"-1"), None);
        assert_eq!(strtoul(b"4294967296"), Some(0));
    }

    /// memcached reads meta numbers with the same `safe_strto*` helpers as
    /// text commands: C white space (vertical tab included) before the
    /// number, and only the byte right after its digits checked (Debian's
    /// memcached 1.6.18 answers `ma n D\x0b3` and `ma n D3\tx` with VA). Found
    /// by the `text` fuzz target, which checks that the two agree.
    #[test]
    fn numbers_follow_the_text_protocol_helpers() {
        assert_eq!(strtoull(b"\x0b3"), Some(3));
        assert_eq!(strtoull(b"3\tx"), Some(3));
        assert_eq!(strtoull(b"8\r2"), Some(8));
        assert_eq!(strtol(b"\x0b-5"), Some(-5));
        assert_eq!(strtol(b"100\tjunk"), Some(100));
        assert_eq!(strtoul(b"7\x0b"), Some(7));
        assert_eq!(strtoull(b"3x"), None, "a non-space byte after the digits");
    }

    #[test]
    fn limits() {
        let many = tokenize(b"mg k a b c d e f g h i j k l m n o p q r");
        assert!(too_many(&many));
        let ok = tokenize(b"mg k a b c d e f g h i j k l m n o p q");
        assert!(!too_many(&ok));
        assert!(opaque_too_long(&[b"O12345678901234567890123456789012"]));
        assert!(!opaque_too_long(&[b"O1234567890123456789012345678901"]));
    }
}
