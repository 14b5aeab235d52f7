//! Tokenizing a command line and memcached's number rules, without allocating.
//!
//! memcached splits a line on spaces only (not tabs) into at most 23 tokens
//! plus a terminal one, and parses numbers with `strtoul`/`strtol`/`strtoull`
//! wrapped in its `safe_*` helpers. We reproduce those helpers' exact
//! acceptance rules (including their quirks: a leading `+`, a `-` that
//! wraps, truncation of 64-bit results to 32 bits) so that every line gets
//! the same reply it would get from memcached.

/// memcached's `MAX_TOKENS`: 23 real tokens and the terminal token.
pub const MAX_TOKENS: usize = 24;
/// Longest key memcached accepts.
pub const KEY_MAX_LENGTH: usize = 250;

/// Where memcached's view of a command line ends: at its first NUL, if any
/// (memcached ends the line with a NUL and tokenizes up to the first one, so
/// a NUL cuts the line short there, and no key can hold one).
pub fn c_line_len(line: &[u8]) -> usize {
    line.iter().position(|&b| b == 0).unwrap_or(line.len())
}

/// A command line split on spaces into a fixed array (no allocation).
pub struct Tokens<'a> {
    toks: [&'a [u8]; MAX_TOKENS],
    /// Real tokens stored (at most MAX_TOKENS - 1).
    n: usize,
    /// The line after the command token: multi-key gets read their keys from
    /// here, because a get line may hold any number of keys.
    after_cmd: &'a [u8],
}

impl<'a> Tokens<'a> {
    pub fn new(line: &'a [u8]) -> Tokens<'a> {
        let mut toks: [&'a [u8]; MAX_TOKENS] = [&line[..0]; MAX_TOKENS];
        let mut n = 0;
        let mut after_cmd = &line[line.len()..];
        let mut i = 0;
        while n < MAX_TOKENS - 1 {
            while i < line.len() && line[i] == b' ' {
                i += 1;
            }
            if i == line.len() {
                break;
            }
            let start = i;
            while i < line.len() && line[i] != b' ' {
                i += 1;
            }
            toks[n] = &line[start..i];
            if n == 0 {
                after_cmd = &line[i..];
            }
            n += 1;
        }
        Tokens { toks, n, after_cmd }
    }

    /// memcached's `ntokens`: the real tokens plus its terminal token. The
    /// per-command token-count rules are written against this number.
    pub fn count(&self) -> usize {
        self.n + 1
    }

    /// Token `i`, or empty past the end.
    pub fn get(&self, i: usize) -> &'a [u8] {
        if i < self.n {
            self.toks[i]
        } else {
            b""
        }
    }

    /// The last token, as memcached's `set_noreply_maybe` looks at it.
    pub fn last(&self) -> &'a [u8] {
        if self.n > 0 {
            self.toks[self.n - 1]
        } else {
            b""
        }
    }

    /// memcached's `set_noreply_maybe`: the last token is `noreply`.
    pub fn noreply(&self) -> bool {
        self.n > 1 && self.last() == b"noreply"
    }

    /// Every token after the command, however many (for get/gets/gat/gats).
    pub fn rest(&self) -> impl Iterator<Item = &'a [u8]> {
        self.after_cmd.split(|&b| b == b' ').filter(|t| !t.is_empty())
    }
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The core of C's `strtoull`/`strtoll` in base 10: leading white space, an
/// optional sign, digits. Returns (magnitude, negative, end of digits), or
/// `None` when there are no digits or the magnitude overflows `limit`.
fn c_strto(s: &[u8], limit: u64) -> Option<(u64, bool, usize)> {
    let mut i = 0;
    while i < s.len() && is_c_space(s[i]) {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    let digits_start = i;
    let mut v: u64 = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add((s[i] - b'0') as u64)?;
        i += 1;
    }
    if i == digits_start || v > limit {
        return None;
    }
    Some((v, neg, i))
}

/// memcached accepts a number only if what follows it is the end of the
/// token or white space.
fn ends_well(s: &[u8], end: usize) -> bool {
    end == s.len() || is_c_space(s[end])
}

/// memcached's `safe_strtoull`: a `-` is refused only when the result would
/// look negative as a signed number (so `-0` is 0, `-1` is an error).
pub fn safe_strtoull(s: &[u8]) -> Option<u64> {
    let (mag, neg, end) = c_strto(s, u64::MAX)?;
    if !ends_well(s, end) {
        return None;
    }
    let v = if neg { mag.wrapping_neg() } else { mag };
    if (v as i64) < 0 && s[..end].contains(&b'-') {
        return None;
    }
    Some(v)
}

/// memcached's `safe_strtoul` on a 64-bit host: `strtoul` is 64-bit, and the
/// result is then stored in a `uint32_t` (so 4294967296 becomes 0, exactly
/// as memcached 1.6 does with flags).
pub fn safe_strtoul(s: &[u8]) -> Option<u32> {
    safe_strtoull(s).map(|v| v as u32)
}

/// memcached's `safe_strtol` on a 64-bit host: a 64-bit `strtol`, stored in
/// an `int32_t` (truncating, as memcached does).
pub fn safe_strtol(s: &[u8]) -> Option<i32> {
    // strtol's range is [i64::MIN, i64::MAX]: a magnitude of 2^63 is only
    // valid when negative.
    let (mag, neg, end) = c_strto(s, 1u64 << 63)?;
    if !neg && mag > i64::MAX as u64 {
        return None;
    }
    if !ends_well(s, end) {
        return None;
    }
    let v = if neg { (mag as i64).wrapping_neg() } else { mag as i64 };
    Some(v as i32)
}

/// Append the decimal form of `n` (no allocation).
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_split_on_spaces_only_and_cap_at_23() {
        let t = Tokens::new(b"  set  k\t1 0  5 noreply ");
        assert_eq!(t.count(), 6);
        assert_eq!(t.get(0), b"set");
        assert_eq!(t.get(1), b"k\t1", "a tab is part of a token, as in memcached");
        assert_eq!(t.get(4), b"noreply");
        assert_eq!(t.get(9), b"");
        assert!(t.noreply());
        let line: Vec<u8> = (0..40).flat_map(|i| format!("t{i} ").into_bytes()).collect();
        let t = Tokens::new(&line);
        assert_eq!(t.count(), MAX_TOKENS);
        assert_eq!(t.rest().count(), 39, "get reads every key, past the token cap");
        assert_eq!(Tokens::new(b"").count(), 1);
        assert_eq!(Tokens::new(b"    ").count(), 1);
        assert!(!Tokens::new(b"noreply").noreply());
    }

    #[test]
    fn a_nul_ends_the_line_as_in_c() {
        assert_eq!(c_line_len(b"set a\0b 0 0 1"), 5);
        assert_eq!(c_line_len(b"\0get k"), 0);
        assert_eq!(c_line_len(b"get a\x01\x7f\xff\rb"), 10, "only a NUL cuts");
    }

    #[test]
    fn numbers_follow_memcached_safe_helpers() {
        assert_eq!(safe_strtoull(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(safe_strtoull(b"18446744073709551616"), None);
        assert_eq!(safe_strtoull(b"+3"), Some(3));
        assert_eq!(safe_strtoull(b"-0"), Some(0));
        assert_eq!(safe_strtoull(b"-1"), None);
        assert_eq!(safe_strtoull(b"-18446744073709551615"), Some(1), "strtoull's wrap, kept");
        assert_eq!(safe_strtoull(b""), None);
        assert_eq!(safe_strtoull(b"abc"), None);
        assert_eq!(safe_strtoull(b"12abc"), None);
        assert_eq!(safe_strtoull(b"12\tx"), Some(12), "only the byte after the digits is checked");
        assert_eq!(safe_strtoul(b"4294967296"), Some(0));
        assert_eq!(safe_strtoul(b"4294967295"), Some(u32::MAX));
        assert_eq!(safe_strtoul(b"-1"), None);
        assert_eq!(safe_strtol(b"-1"), Some(-1));
        assert_eq!(safe_strtol(b"4294967297"), Some(1));
        assert_eq!(safe_strtol(b"9223372036854775807"), Some(-1));
        assert_eq!(safe_strtol(b"9223372036854775808"), None);
        assert_eq!(safe_strtol(b"-9223372036854775808"), Some(0));
        assert_eq!(safe_strtol(b"-9223372036854775809"), None);
        assert_eq!(safe_strtol(b"1.5"), None);
        assert_eq!(safe_strtol(b"-"), None);
    }

    #[test]
    fn push_u64_formats() {
        let mut v = Vec::new();
        push_u64(&mut v, 0);
        v.push(b' ');
        push_u64(&mut v, u64::MAX);
        assert_eq!(v, b"0 18446744073709551615");
    }
}
