//! memcached's ascii authentication (`-Y FILE`): the file holds `user:pass`
//! lines; a text client proves itself with `set auth <any> 0 0 <n>\r\nuser
//! pass\r\n` before anything else (src/protocol/ascii_auth.rs is the gate).
//! Loaded once at start; the file is bounded, and the secrets never reach a
//! log or `Debug`.

use std::path::Path;

use crate::error::{Context, Result};

/// Larger auth files are refused: a file of user:pass lines has no business
/// being big, and it is read whole at start.
const MAX_FILE: u64 = 1 << 20;

/// The `user:pass` entries of a `-Y` file.
pub struct AsciiAuth {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for AsciiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AsciiAuth({} entries)", self.entries.len())
    }
}

impl AsciiAuth {
    /// Read `path`: one `user:pass` per line; blank lines are skipped, a line
    /// without `:` is an error (memcached refuses such a file too).
    pub fn load(path: &Path) -> Result<AsciiAuth> {
        let what = || format!("-Y {}", path.display());
        let len = std::fs::metadata(path).with_context(what)?.len();
        if len > MAX_FILE {
            crate::bail!("-Y {}: {len} bytes, at most {MAX_FILE}", path.display());
        }
        let text = std::fs::read(path).with_context(what)?;
        AsciiAuth::parse(&text).with_context(what)
    }

    pub fn parse(text: &[u8]) -> Result<AsciiAuth> {
        let mut entries = Vec::new();
        for (n, line) in text.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                crate::bail!("line {}: not user:pass", n + 1);
            };
            entries.push((line[..colon].to_vec(), line[colon + 1..].to_vec()));
        }
        if entries.is_empty() {
            crate::bail!("no user:pass entries");
        }
        Ok(AsciiAuth { entries })
    }

    /// Whether `user` and `pass` are an entry; every entry is compared in
    /// full, so the time says nothing about which part differed.
    pub fn check(&self, user: &[u8], pass: &[u8]) -> bool {
        let mut ok = false;
        for (u, p) in &self.entries {
            ok |= eq(u, user) & eq(p, pass);
        }
        ok
    }
}

fn eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_checks() {
        let a = AsciiAuth::parse(b"alice:secret\r\n\nbob:p:w\n").unwrap();
        assert!(a.check(b"alice", b"secret") && a.check(b"bob", b"p:w"));
        assert!(!a.check(b"alice", b"secre") && !a.check(b"alice", b"p:w") && !a.check(b"", b""));
        assert!(AsciiAuth::parse(b"nocolon\n").is_err() && AsciiAuth::parse(b"\n").is_err());
        assert_eq!(format!("{a:?}"), "AsciiAuth(2 entries)");
    }
}
