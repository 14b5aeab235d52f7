//! A read-only replica through the binary and meta protocols: every write
//! refused with the documented reply, reads served, nothing changed.

use crate::memory::region::HugePages;
use crate::protocol::{binary, step, Ctx, Session, Step};
use crate::runtime::{Runtime, Settings};
use crate::store::{ReadOpts, SetArgs, SetMode, Store, StoreConfig};

fn fixture() -> (Store, Runtime) {
    let store =
        Store::new(&StoreConfig { memory_bytes: 4 << 20, max_item_size: 64 << 10, hugepages: HugePages::Off }).unwrap();
    store.set(&SetArgs::new(SetMode::Set, b"k", b"v", 0, 0)).unwrap();
    store.set_read_only(true);
    let rt = Runtime::new(Settings { threads: 1, ..Settings::default() }, 0);
    (store, rt)
}

fn run(store: &Store, rt: &Runtime, input: &[u8]) -> Vec<u8> {
    let ctx = Ctx { store, stats: &rt.workers[0], rt };
    let mut session = Session::default();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < input.len() {
        match step(&mut session, &input[pos..], &mut out, &ctx) {
            Step::Consumed { len: n, .. } | Step::Discarded(n) => pos += n,
            Step::NeedMore | Step::Close | Step::Paused => break,
        }
    }
    out
}

#[test]
fn binary_writes_get_not_supported_with_a_reason() {
    let (store, rt) = fixture();
    for (op, extras, value) in [
        (0x01u8, vec![0u8; 8], &b"x"[..]),
        (0x11, vec![0u8; 8], b"x"), // setq: errors are reported even when quiet
        (0x0e, vec![], b"x"),
        (0x04, vec![], b""),
        (0x05, vec![0u8; 20], b""),
        (0x1c, vec![0u8; 4], b""),
    ] {
        let out = run(&store, &rt, &binary::header::test_request(op, b"k", &extras, value));
        assert_eq!(&out[6..8], &0x0083u16.to_be_bytes(), "op {op:#x}");
        assert_eq!(&out[24..], b"read-only replica");
    }
    let out = run(&store, &rt, &binary::header::test_request(0x08, b"", &[], b""));
    assert_eq!(&out[6..8], &0x0083u16.to_be_bytes());
    // Reads work.
    let out = run(&store, &rt, &binary::header::test_request(0x00, b"k", &[], b""));
    assert_eq!((&out[6..8], &out[28..]), (&[0u8, 0][..], &b"v"[..]));
    let mut v = Vec::new();
    store.get(b"k", ReadOpts { value: true, note_access: false }, &mut v, |_, _| {});
    assert_eq!(v, b"v");
}

#[test]
fn meta_writes_get_server_error_reads_work() {
    let (store, rt) = fixture();
    let ctx = Ctx { store: &store, stats: &rt.workers[0], rt: &rt };
    let meta = |line: &str| {
        let mut out = Vec::new();
        let mut session = Session::default();
        let input = line.as_bytes();
        let nl = input.iter().position(|&b| b == b'\n').unwrap();
        let r = super::step(&mut session, input, nl - 1, nl + 1, &mut out, &ctx);
        assert!(matches!(r, Step::Consumed { kind: crate::protocol::Kind::Meta, .. }));
        String::from_utf8(out).unwrap()
    };
    for line in ["ms k 1\r\nx\r\n", "md k\r\n", "ma k\r\n", "mg k T10\r\n", "md k I\r\n"] {
        assert_eq!(meta(line), "SERVER_ERROR read-only replica\r\n", "{line:?}");
    }
    assert_eq!(meta("mg k v\r\n"), "VA 1\r\nv\r\n");
    assert_eq!(meta("mg nope N30 v\r\n"), "EN\r\n", "a replica never creates");
}
