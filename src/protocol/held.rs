//! `--sync-replicas` group commit, the protocol's side: the reply a write
//! gets in place of its own when K replicas did not confirm it within
//! `--sync-timeout`. The connection holds a write's reply in its output
//! (server/conn.rs) and, if the wait runs out, puts this in its place: the
//! reply the write would have had had it waited in the request (text and
//! meta `SERVER_ERROR stored, but not confirmed ...`, binary status 0x86).
//!
//! It is worked out from the request's bytes when the reply is held, so the
//! handlers need not know their reply may be held.

use super::binary::header::{write_response_header, RequestHeader};
use super::binary::status;
use super::text::parse::{c_line_len, Tokens};
use super::Protocol;
use crate::store::StoreError;

/// What replaces a held reply whose wait ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unconfirmed {
    /// A text command with `noreply`: it had no reply, and gets no error
    /// either (as in the request: `noreply` silences errors too).
    Silent,
    /// A text or meta command: the error line (meta sends errors even under
    /// its `q` flag).
    Line,
    /// A binary request (quiet ones too: binary errors are always sent),
    /// under its own opcode and opaque.
    Binary { opcode: u8, opaque: u32 },
}

impl Unconfirmed {
    /// For `request`, the bytes of one request a session of `protocol` consumed.
    pub fn of(protocol: Option<Protocol>, request: &[u8]) -> Unconfirmed {
        match protocol {
            Some(Protocol::Binary) => match RequestHeader::parse(request) {
                Some(h) => Unconfirmed::Binary { opcode: h.opcode, opaque: h.opaque },
                None => Unconfirmed::Silent,
            },
            _ => {
                let nl = request.iter().position(|&b| b == b'\n').unwrap_or(request.len());
                let line = &request[..nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let tokens = Tokens::new(&line[..c_line_len(line)]);
                let cmd = tokens.get(0);
                let meta = cmd.len() == 2 && cmd[0] == b'm';
                if !meta && tokens.noreply() {
                    Unconfirmed::Silent
                } else {
                    Unconfirmed::Line
                }
            }
        }
    }

    /// Append the error reply.
    pub fn write(&self, out: &mut Vec<u8>) {
        let msg = StoreError::NotReplicated.to_string();
        match *self {
            Unconfirmed::Silent => {}
            Unconfirmed::Line => {
                out.extend_from_slice(b"SERVER_ERROR ");
                out.extend_from_slice(msg.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Unconfirmed::Binary { opcode, opaque } => {
                write_response_header(out, opcode, status::ETMPFAIL, 0, 0, msg.len() as u32, opaque, 0);
                out.extend_from_slice(msg.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::binary::header::test_request;
    use crate::protocol::binary::opcode;

    fn written(u: Unconfirmed) -> Vec<u8> {
        let mut out = Vec::new();
        u.write(&mut out);
        out
    }

    #[test]
    fn text_replies_the_error_line_unless_noreply() {
        let line = b"SERVER_ERROR stored, but not confirmed by the required replicas in time\r\n".to_vec();
        let set = Unconfirmed::of(Some(Protocol::Text), b"set k 0 0 1\r\nv\r\n");
        assert_eq!(written(set), line);
        let quiet = Unconfirmed::of(Some(Protocol::Text), b"set k 0 0 1 noreply\r\nv\r\n");
        assert_eq!(quiet, Unconfirmed::Silent);
        assert!(written(quiet).is_empty());
        assert_eq!(Unconfirmed::of(Some(Protocol::Text), b"delete k noreply\n"), Unconfirmed::Silent);
        // Meta sends errors whatever its flags say.
        assert_eq!(Unconfirmed::of(Some(Protocol::Text), b"ms k 1 q\r\nv\r\n"), Unconfirmed::Line);
        assert_eq!(Unconfirmed::of(Some(Protocol::Text), b"gat 0 k\r\n"), Unconfirmed::Line);
    }

    #[test]
    fn binary_replies_etmpfail_under_the_requests_opcode_and_opaque() {
        let mut req = test_request(opcode::SETQ, b"k", &[0; 8], b"v");
        req[12..16].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        let u = Unconfirmed::of(Some(Protocol::Binary), &req);
        assert_eq!(u, Unconfirmed::Binary { opcode: opcode::SETQ, opaque: 0xdead_beef });
        let out = written(u);
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], opcode::SETQ);
        assert_eq!(u16::from_be_bytes([out[6], out[7]]), 0x86);
        assert_eq!(&out[12..16], &0xdead_beefu32.to_be_bytes());
        assert_eq!(&out[24..], b"stored, but not confirmed by the required replicas in time");
        assert_eq!(u32::from_be_bytes([out[8], out[9], out[10], out[11]]) as usize, out.len() - 24);
    }
}
