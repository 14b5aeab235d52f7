//! Each request reports the command that ran, for its latency histogram;
//! bytes swallowed after a refused value are not a request.

use crate::memory::region::HugePages;
use crate::protocol::{binary, step, Ctx, Kind, Session, Step};
use crate::runtime::{Runtime, Settings};
use crate::store::{Store, StoreConfig};

/// The steps `input` takes on one fresh connection, until it needs more.
fn steps(input: &[u8]) -> Vec<Step> {
    let store =
        Store::new(&StoreConfig { memory_bytes: 4 << 20, max_item_size: 1024, hugepages: HugePages::Off }).unwrap();
    let rt = Runtime::new(Settings { threads: 1, ..Settings::default() }, 0);
    let ctx = Ctx { store: &store, stats: &rt.workers[0], rt: &rt };
    let (mut session, mut out, mut pos, mut v) = (Session::default(), Vec::new(), 0, Vec::new());
    loop {
        let s = step(&mut session, &input[pos..], &mut out, &ctx);
        v.push(s);
        match s {
            Step::Consumed { len, .. } | Step::Discarded(len) => pos += len,
            Step::NeedMore | Step::Close | Step::Paused => return v,
        }
    }
}

fn kind(input: &[u8]) -> Kind {
    match steps(input)[0] {
        Step::Consumed { len, kind } => {
            assert_eq!(len, input.len(), "{:?}", String::from_utf8_lossy(input));
            kind
        }
        s => panic!("{:?}: {s:?}", String::from_utf8_lossy(input)),
    }
}

#[test]
fn text_and_meta_commands_report_their_kind() {
    assert_eq!(kind(b"get a b\r\n"), Kind::Get);
    assert_eq!(kind(b"gets a\r\n"), Kind::Get);
    assert_eq!(kind(b"bget a\r\n"), Kind::Get);
    assert_eq!(kind(b"get\r\n"), Kind::Get, "a get without keys is still a get (answered ERROR)");
    assert_eq!(kind(b"  get k\r\n"), Kind::Get);
    assert_eq!(kind(b"set k 0 0 1\r\nx\r\n"), Kind::Set);
    assert_eq!(kind(b"cas k 0 0 1 5\r\nx\r\n"), Kind::Set);
    assert_eq!(kind(b"set k 0 0\r\n"), Kind::Set);
    assert_eq!(kind(b"append k 0 0 1\r\nx\r\n"), Kind::Set);
    assert_eq!(kind(b"delete k\r\n"), Kind::Delete);
    assert_eq!(kind(b"decr k 1\r\n"), Kind::IncrDecr);
    assert_eq!(kind(b"incr k 1\r\n"), Kind::IncrDecr);
    assert_eq!(kind(b"touch k 1\r\n"), Kind::Touch);
    assert_eq!(kind(b"gat 10 k\r\n"), Kind::Touch);
    assert_eq!(kind(b"gats 10 k\r\n"), Kind::Touch);
    assert_eq!(kind(b"mg k v\r\n"), Kind::Meta);
    assert_eq!(kind(b"mn\r\n"), Kind::Meta);
    assert_eq!(kind(b"ms k 1\r\nx\r\n"), Kind::Meta);
    assert_eq!(kind(b"mx k\r\n"), Kind::Other);
    assert_eq!(kind(b"stats\r\n"), Kind::Other);
    assert_eq!(kind(b"version\r\n"), Kind::Other);
    assert_eq!(kind(b"getx\r\n"), Kind::Other);
    assert_eq!(kind(b"\r\n"), Kind::Other);
    assert_eq!(steps(b"quit\r\n"), [Step::Close]);
}

#[test]
fn a_refused_value_is_discarded_not_timed() {
    // Over -I (1024 here): refused before it is read, then swallowed.
    let mut input = b"set k 0 0 2000\r\n".to_vec();
    let line = input.len();
    input.resize(line + 2002, b'x');
    let s = steps(&input);
    assert_eq!(s[0], Step::Consumed { len: line, kind: Kind::Set });
    assert!(s[1..s.len() - 1].iter().all(|s| matches!(s, Step::Discarded(_))), "{s:?}");
    assert_eq!(s.last(), Some(&Step::NeedMore));
    let mut ms = b"ms k 2000\r\n".to_vec();
    let line = ms.len();
    ms.resize(line + 2002, b'x');
    assert_eq!(steps(&ms)[..2], [Step::Consumed { len: line, kind: Kind::Meta }, Step::Discarded(2002)]);
}

#[test]
fn binary_opcodes_report_their_kind() {
    use binary::opcode::*;
    let set = |op| kind(&binary::header::test_request(op, b"k", &[0; 8], b"v"));
    for op in [SET, SETQ, ADD, ADDQ, REPLACE, REPLACEQ] {
        assert_eq!(set(op), Kind::Set, "op {op:#x}");
    }
    for op in [APPEND, APPENDQ, PREPEND, PREPENDQ] {
        assert_eq!(kind(&binary::header::test_request(op, b"k", &[], b"v")), Kind::Set, "op {op:#x}");
    }
    for op in [GET, GETQ, GETK, GETKQ] {
        assert_eq!(kind(&binary::header::test_request(op, b"k", &[], b"")), Kind::Get, "op {op:#x}");
    }
    for op in [DELETE, DELETEQ] {
        assert_eq!(kind(&binary::header::test_request(op, b"k", &[], b"")), Kind::Delete, "op {op:#x}");
    }
    for op in [INCREMENT, INCREMENTQ, DECREMENT, DECREMENTQ] {
        assert_eq!(kind(&binary::header::test_request(op, b"k", &[0; 20], b"")), Kind::IncrDecr, "op {op:#x}");
    }
    for op in [TOUCH, GAT, GATQ, GATK, GATKQ] {
        assert_eq!(kind(&binary::header::test_request(op, b"k", &[0; 4], b"")), Kind::Touch, "op {op:#x}");
    }
    for op in [NOOP, VERSION, FLUSH, STAT, 0x50] {
        assert_eq!(kind(&binary::header::test_request(op, b"", &[], b"")), Kind::Other, "op {op:#x}");
    }
    // A value over -I: answered, then its bytes discarded.
    let big = binary::header::test_request(SET, b"k", &[0; 8], &[b'x'; 2000]);
    assert_eq!(steps(&big)[..2], [Step::Consumed { len: 24 + 9, kind: Kind::Set }, Step::Discarded(2000)]);
}
