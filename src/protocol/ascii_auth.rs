//! memcached's `-Y` gate for a text session that has not authenticated:
//! `set <any> <flags> <exptime> <n>\r\n<user> <pass>\r\n` is the login
//! (`STORED`, or `CLIENT_ERROR authentication failure`, or `CLIENT_ERROR
//! bad authentication token format` when the value is not two words), and
//! any other command is answered `CLIENT_ERROR unauthenticated`; the
//! connection stays open either way, as memcached 1.6's (checked against
//! Debian's 1.6.18). The admin socket needs no login: its file mode guards it.

use super::{Kind, Session, Step};
use crate::auth::ascii::AsciiAuth;

/// A command line longer than this is refused (memcached's is 2048 too).
const MAX_LINE: usize = 2048;
/// The `user pass` value: no credential is longer.
const MAX_TOKEN: usize = 4096;

pub fn step(session: &mut Session, input: &[u8], out: &mut Vec<u8>, auth: &AsciiAuth) -> Step {
    let Some(nl) = input.iter().take(MAX_LINE).position(|&b| b == b'\n') else {
        if input.len() >= MAX_LINE {
            out.extend_from_slice(b"CLIENT_ERROR line too long\r\n");
            return Step::Close;
        }
        return Step::NeedMore;
    };
    let line = input[..nl].strip_suffix(b"\r").unwrap_or(&input[..nl]);
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let consumed = |len| Step::Consumed { len, kind: Kind::Other };
    if words.next() != Some(b"set".as_slice()) {
        out.extend_from_slice(b"CLIENT_ERROR unauthenticated\r\n");
        return consumed(nl + 1);
    }
    let n = words.nth(3).and_then(|w| std::str::from_utf8(w).ok()).and_then(|w| w.parse::<usize>().ok());
    let Some(n) = n.filter(|&n| n <= MAX_TOKEN) else {
        out.extend_from_slice(b"CLIENT_ERROR bad command line format\r\n");
        return consumed(nl + 1);
    };
    let end = nl + 1 + n;
    if input.len() < end + 2 {
        return Step::NeedMore;
    }
    if &input[end..end + 2] != b"\r\n" {
        out.extend_from_slice(b"CLIENT_ERROR bad data chunk\r\n");
        return Step::Close;
    }
    let mut cred = input[nl + 1..end].split(|&b| b == b' ').filter(|w| !w.is_empty());
    match (cred.next(), cred.next(), cred.next()) {
        (Some(user), Some(pass), None) => {
            if auth.check(user, pass) {
                session.authenticated = true;
                out.extend_from_slice(b"STORED\r\n");
            } else {
                out.extend_from_slice(b"CLIENT_ERROR authentication failure\r\n");
            }
        }
        _ => out.extend_from_slice(b"CLIENT_ERROR bad authentication token format\r\n"),
    }
    consumed(end + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &mut Session, input: &[u8]) -> (Step, String) {
        let auth = AsciiAuth::parse(b"alice:secret\n").unwrap();
        let mut out = Vec::new();
        let st = step(s, input, &mut out, &auth);
        (st, String::from_utf8(out).unwrap())
    }

    #[test]
    fn memcached_replies() {
        let mut s = Session::default();
        let c = |len| Step::Consumed { len, kind: Kind::Other };
        assert_eq!(run(&mut s, b"get a\r\n"), (c(7), "CLIENT_ERROR unauthenticated\r\n".into()));
        assert_eq!(
            run(&mut s, b"set a 0 0 1\r\nv\r\n"),
            (c(16), "CLIENT_ERROR bad authentication token format\r\n".into())
        );
        assert_eq!(
            run(&mut s, b"set x 0 0 11\r\nalice wrong\r\n"),
            (c(27), "CLIENT_ERROR authentication failure\r\n".into())
        );
        assert_eq!(run(&mut s, b"set x 0 0 12\r\nalice secr"), (Step::NeedMore, String::new()));
        assert!(!s.authenticated);
        assert_eq!(run(&mut s, b"set x 0 0 14\r\nalice   secret\r\n"), (c(30), "STORED\r\n".into()));
        assert!(s.authenticated);
        let mut s = Session::default();
        assert_eq!(run(&mut s, &[b'a'; MAX_LINE]).0, Step::Close);
        assert_eq!(run(&mut s, b"set x 0 0 99999999\r\n").1, "CLIENT_ERROR bad command line format\r\n");
    }
}
