//! The `binary` target: binary-protocol frames built from the input (an
//! opcode, a key from a small pool or raw bytes, the extras the opcode wants
//! or not, a value, and now and then a header field that lies), run as one
//! connection. Beyond the connection checks, every step's reply must be
//! whole response frames under the request's opcode and opaque, as many as
//! the request calls for (one; at most one when quiet, and then only an
//! error or a hit; stat's lines and its empty terminator), shaped by status
//! (a hit has 4 bytes of flags, and the key for getk/gatk; incr answers 8
//! bytes). A request header re-encodes to its own bytes. An input starting
//! with [`RAW`] is the stream itself (seeds from real traffic).

use super::conn;
use super::input::Choices;
use super::text::lossy;
use crate::client::wire;
use crate::protocol::binary::header::{RequestHeader, HEADER_LEN, REQUEST_MAGIC, RESPONSE_MAGIC};
use crate::protocol::binary::{opcode, status};
use crate::protocol::Step;

pub fn binary(data: &[u8]) {
    match data.split_first() {
        // Raw bytes (seeds taken from real traffic), else choices.
        Some((&RAW, raw)) => conn::run(raw),
        _ => conn::run(&frames(data)),
    };
}

/// First byte of an input that is raw bytes, not choices (binary, meta).
pub const RAW: u8 = 0xff;

/// Keys the frames share, so that sets and gets meet.
const KEYS: &[&[u8]] = &[b"a", b"b", b"key", b"n", b"\x01bin\xff"];

/// Opcodes worth generating: every known one, loud and quiet.
const OPCODES: &[u8] = &[
    opcode::GET,
    opcode::SET,
    opcode::ADD,
    opcode::REPLACE,
    opcode::DELETE,
    opcode::INCREMENT,
    opcode::DECREMENT,
    opcode::QUIT,
    opcode::FLUSH,
    opcode::GETQ,
    opcode::NOOP,
    opcode::VERSION,
    opcode::GETK,
    opcode::GETKQ,
    opcode::APPEND,
    opcode::PREPEND,
    opcode::STAT,
    opcode::SETQ,
    opcode::ADDQ,
    opcode::REPLACEQ,
    opcode::DELETEQ,
    opcode::INCREMENTQ,
    opcode::DECREMENTQ,
    opcode::QUITQ,
    opcode::FLUSHQ,
    opcode::APPENDQ,
    opcode::PREPENDQ,
    opcode::VERBOSITY,
    opcode::TOUCH,
    opcode::GAT,
    opcode::GATQ,
    opcode::SASL_LIST_MECHS,
    opcode::SASL_AUTH,
    opcode::GATK,
    opcode::GATKQ,
];

/// A stream of binary requests decoded from the fuzzer's choices.
pub fn frames(data: &[u8]) -> Vec<u8> {
    let mut c = Choices::new(data);
    let mut out = Vec::new();
    while !c.is_empty() && out.len() < 64 << 10 {
        let sel = c.u8();
        let op = if sel & 0x80 != 0 { c.u8() } else { OPCODES[sel as usize % OPCODES.len()] };
        let (base, _) = opcode::base(op);
        let key: Vec<u8> = match c.below(8) {
            0 => Vec::new(),
            1..=5 => c.pick(KEYS).to_vec(),
            6 => {
                let n = c.u8() as usize;
                c.bytes(n).to_vec()
            }
            _ => vec![b'x'; 240 + c.below(20)],
        };
        let expiry = match c.below(4) {
            0 => 0u32,
            1 => u32::MAX,
            2 => c.u8() as u32,
            _ => c.u32(),
        };
        let mut extras = match base {
            opcode::SET | opcode::ADD | opcode::REPLACE => [c.u32().to_be_bytes(), expiry.to_be_bytes()].concat(),
            opcode::INCREMENT | opcode::DECREMENT => {
                let delta = if c.u8() & 1 == 0 { c.u8() as u64 } else { c.u64() };
                [&delta.to_be_bytes()[..], &c.u64().to_be_bytes(), &expiry.to_be_bytes()].concat()
            }
            opcode::TOUCH | opcode::GAT | opcode::GATK | opcode::VERBOSITY => expiry.to_be_bytes().to_vec(),
            opcode::FLUSH if c.u8() & 1 == 1 => expiry.to_be_bytes().to_vec(),
            _ => Vec::new(),
        };
        let mut value: Vec<u8> = match base {
            opcode::SET | opcode::ADD | opcode::REPLACE | opcode::APPEND | opcode::PREPEND => match c.below(4) {
                0 => c.u8().to_string().into_bytes(),
                1 => vec![b'v'; c.u16() as usize % (conn::MAX_ITEM + 64)],
                _ => {
                    let n = c.u8() as usize;
                    c.bytes(n).to_vec()
                }
            },
            _ => Vec::new(),
        };
        let cas = match c.below(4) {
            0 | 1 => 0,
            2 => c.u8() as u64,
            _ => c.u64(),
        };
        let opaque = c.u32();
        let lie = if sel & 0x40 != 0 { c.u8() } else { 0 };
        match lie % 8 {
            1 => {
                let n = c.below(32);
                extras = c.bytes(n).to_vec();
            }
            2 => {
                let n = c.u8() as usize;
                value = c.bytes(n).to_vec();
            }
            _ => {}
        }
        let mut frame = Vec::new();
        wire::request(&mut frame, op, cas, &extras, &key, &value);
        frame[12..16].copy_from_slice(&opaque.to_be_bytes());
        match lie % 8 {
            3 => frame[2..4].copy_from_slice(&c.u16().to_be_bytes()),
            4 => frame[4] = c.u8(),
            5 => frame[8..12].copy_from_slice(&c.u32().to_be_bytes()),
            6 => {
                let i = c.below(HEADER_LEN);
                frame[i] = c.u8();
            }
            7 => {
                let n = c.below(frame.len());
                frame.truncate(n);
            }
            _ => {}
        }
        out.extend_from_slice(&frame);
    }
    out
}

/// The 24 bytes a request header was parsed from.
pub fn encode_header(h: &RequestHeader) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0] = h.magic;
    b[1] = h.opcode;
    b[2..4].copy_from_slice(&h.key_len.to_be_bytes());
    b[4] = h.extras_len;
    b[5] = h.data_type;
    b[6..8].copy_from_slice(&h.vbucket.to_be_bytes());
    b[8..12].copy_from_slice(&h.body_len.to_be_bytes());
    b[12..16].copy_from_slice(&h.opaque.to_be_bytes());
    b[16..24].copy_from_slice(&h.cas.to_be_bytes());
    b
}

/// Every frame of `out`, which must be whole response frames.
pub fn responses(out: &[u8]) -> Vec<wire::Response> {
    let mut v = Vec::new();
    let mut pos = 0;
    while pos < out.len() {
        assert_eq!(out[pos], RESPONSE_MAGIC, "reply frame at {pos} of {:?}", lossy(out));
        match wire::parse(&out[pos..]) {
            Ok(Some((r, n))) => {
                v.push(r);
                pos += n;
            }
            other => panic!("reply frame at {pos} is not whole: {other:?}"),
        }
    }
    v
}

/// Checks on one step of a binary connection: the request at the front of
/// `req` and the reply `out` it wrote.
pub fn check_step(req: &[u8], out: &[u8], step: Step) {
    let frames = responses(out);
    let Some(h) = RequestHeader::parse(req) else {
        assert!(frames.is_empty(), "a reply without a whole request header");
        return;
    };
    for f in &frames {
        assert_eq!((f.opcode, f.opaque), (h.opcode, h.opaque), "reply under another opcode or opaque: {h:?}");
    }
    let (op, quiet) = opcode::base(h.opcode);
    let key = req.get(HEADER_LEN + h.extras_len as usize..h.head_len()).unwrap_or(&[]);
    if step == Step::Close {
        let n = frames.len();
        if h.magic != REQUEST_MAGIC {
            assert_eq!(n, 0, "bad magic closes without a word");
        } else if op == opcode::QUIT && quiet {
            assert!(n == 0 || (n == 1 && frames[0].status != status::SUCCESS), "quitq says only an error");
        } else if op != opcode::QUIT {
            assert!(n == 1 && frames[0].status != status::SUCCESS, "a close answers one error: {h:?}");
        } else {
            assert_eq!(n, 1, "quit answers once: {h:?}");
        }
        return;
    }
    let gets = matches!(op, opcode::GET | opcode::GETK | opcode::GAT | opcode::GATK);
    if op == opcode::STAT {
        let last = frames.last().unwrap_or_else(|| panic!("stat without a reply"));
        if last.status == status::SUCCESS {
            assert!(last.key.is_empty() && last.value.is_empty(), "stat ends with an empty frame");
            assert!(frames.iter().all(|f| f.status == status::SUCCESS));
        } else {
            assert_eq!(frames.len(), 1, "a stat error is one frame");
        }
    } else if quiet {
        assert!(frames.len() <= 1, "quiet {h:?} answered {} frames", frames.len());
        if let Some(f) = frames.first() {
            if gets {
                assert_ne!(f.status, status::KEY_ENOENT, "a quiet get's miss is silent");
            } else {
                assert_ne!(f.status, status::SUCCESS, "a quiet command's success is silent");
            }
        }
    } else {
        assert_eq!(frames.len(), 1, "{h:?} answered {} frames", frames.len());
    }
    for f in &frames {
        if f.status != status::SUCCESS {
            if matches!(op, opcode::GETK | opcode::GATK) && f.status == status::KEY_ENOENT {
                assert_eq!(f.key, key, "getk's miss names the key");
            }
            continue;
        }
        if gets || op == opcode::TOUCH {
            assert_eq!(f.extras.len(), 4, "a hit carries its flags");
            let with_key = matches!(op, opcode::GETK | opcode::GATK);
            assert_eq!(f.key, if with_key { key } else { &[] }, "key in a hit of {h:?}");
            if op == opcode::TOUCH {
                assert!(f.value.is_empty(), "touch answers no value");
            }
        }
        if matches!(op, opcode::INCREMENT | opcode::DECREMENT) {
            assert!(f.extras.is_empty() && f.value.len() == 8, "incr answers a 64-bit value");
        }
        if matches!(op, opcode::SET | opcode::ADD | opcode::REPLACE | opcode::APPEND | opcode::PREPEND) {
            assert_ne!(f.cas, 0, "a stored item has a CAS");
        }
        if op == opcode::VERSION {
            assert!(f.value.starts_with(b"1.6."), "version {:?}", lossy(&f.value));
        }
    }
}
