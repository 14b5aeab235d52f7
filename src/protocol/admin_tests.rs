//! Admin commands and memcached's switches in-process: `replica ...` only in
//! an admin session; `shutdown` with `-A` (or admin); `flush_all` refused
//! under `-F` (text and binary) unless admin. tests/admin.rs checks the same
//! against the real binary and Debian's memcached.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::memory::region::HugePages;
use crate::protocol::{binary, step, Ctx, Session, Step};
use crate::runtime::{Runtime, Settings};
use crate::stats::counter;
use crate::store::{Store, StoreConfig};

struct H {
    store: Store,
    rt: Runtime,
    shutdowns: Arc<AtomicUsize>,
}

impl H {
    fn new(settings: Settings) -> H {
        let store =
            Store::new(&StoreConfig { memory_bytes: 4 << 20, max_item_size: 1024, hugepages: HugePages::Off }).unwrap();
        let rt = Runtime::new(Settings { threads: 1, ..settings }, 0);
        let shutdowns = Arc::new(AtomicUsize::new(0));
        let s = shutdowns.clone();
        rt.set_shutdown_hook(Box::new(move || {
            s.fetch_add(1, Ordering::Relaxed);
        }));
        H { store, rt, shutdowns }
    }

    /// Run `input` in `session`: the output and whether it asked to close.
    fn run(&self, session: &mut Session, input: &[u8]) -> (Vec<u8>, bool) {
        let ctx = Ctx { store: &self.store, stats: &self.rt.workers[0], rt: &self.rt };
        let (mut out, mut pos) = (Vec::new(), 0);
        loop {
            match step(session, &input[pos..], &mut out, &ctx) {
                Step::Consumed { len, .. } | Step::Discarded(len) => pos += len,
                Step::NeedMore => return (out, false),
                Step::Close => return (out, true),
                Step::Paused => {}
            }
        }
    }

    fn text(&self, session: &mut Session, input: &str) -> String {
        String::from_utf8_lossy(&self.run(session, input.as_bytes()).0).into_owned()
    }
}

fn bin_flush(opcode: u8) -> Vec<u8> {
    let mut r = vec![binary::REQUEST_MAGIC, opcode, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    r.extend_from_slice(&7u32.to_be_bytes());
    r.extend_from_slice(&[0; 8]);
    r
}

#[test]
fn replica_commands_are_refused_on_the_data_port_and_run_in_an_admin_session() {
    let h = H::new(Settings::default());
    let mut data = Session::default();
    for cmd in ["replica promote\r\n", "replica follow shm://x\r\n", "replica\r\n"] {
        let r = h.text(&mut data, cmd);
        assert!(r.starts_with("CLIENT_ERROR ") && r.contains("admin") && r.contains("--admin-socket"), "{r}");
    }
    assert_eq!(counter(&h.rt.workers, "admin_refused"), 3);
    // In an admin session the command runs (here: no replication set up).
    let r = h.text(&mut Session::admin(), "replica promote\r\n");
    assert_eq!(r, "SERVER_ERROR replication is not set up in this process\r\n");
    assert_eq!(counter(&h.rt.workers, "admin_refused"), 3);
}

#[test]
fn shutdown_needs_dash_a_on_the_data_port_and_closes_without_a_reply() {
    let off = H::new(Settings::default());
    for cmd in ["shutdown\r\n", "shutdown graceful\r\n", "shutdown nonsense\r\n"] {
        assert_eq!(
            off.run(&mut Session::default(), cmd.as_bytes()),
            (b"ERROR: shutdown not enabled\r\n".to_vec(), false)
        );
    }
    assert_eq!(off.shutdowns.load(Ordering::Relaxed), 0);
    assert!(off.text(&mut Session::default(), "stats settings\r\n").contains("STAT shutdown_command no\r\n"));
    // The admin socket may always stop the server.
    assert_eq!(off.run(&mut Session::admin(), b"shutdown\r\n"), (Vec::new(), true));
    assert_eq!(off.shutdowns.load(Ordering::Relaxed), 1);

    let on = H::new(Settings { enable_shutdown: true, ..Settings::default() });
    assert!(on.text(&mut Session::default(), "stats settings\r\n").contains("STAT shutdown_command yes\r\n"));
    let bad = on.run(&mut Session::default(), b"shutdown nonsense\r\n");
    assert_eq!(bad, (b"CLIENT_ERROR invalid shutdown mode\r\n".to_vec(), false));
    assert_eq!(on.shutdowns.load(Ordering::Relaxed), 0);
    assert_eq!(on.run(&mut Session::default(), b"shutdown\r\nget k\r\n"), (Vec::new(), true));
    assert_eq!(on.run(&mut Session::default(), b"shutdown graceful\r\n"), (Vec::new(), true));
    assert_eq!(on.shutdowns.load(Ordering::Relaxed), 2);
}

#[test]
fn flush_all_is_refused_under_dash_f_over_text_and_binary_but_not_for_admin() {
    let h = H::new(Settings { flush_enabled: false, ..Settings::default() });
    let mut data = Session::default();
    assert_eq!(h.text(&mut data, "set k 0 0 1\r\nv\r\n"), "STORED\r\n");
    assert_eq!(h.text(&mut data, "flush_all\r\n"), "CLIENT_ERROR flush_all not allowed\r\n");
    assert_eq!(h.text(&mut data, "flush_all 10\r\n"), "CLIENT_ERROR flush_all not allowed\r\n");
    assert_eq!(h.text(&mut data, "flush_all noreply\r\n"), "", "noreply silences it, as in memcached");
    assert_eq!(h.text(&mut data, "flush_all a b c d\r\n"), "ERROR\r\n", "the shape is checked first");
    assert_eq!(counter(&h.rt.workers, "cmd_flush"), 3, "counted, as memcached counts them");
    assert!(h.text(&mut data, "stats settings\r\n").contains("STAT flush_enabled no\r\n"));
    // Binary: memcached's Auth failure, to the quiet variant too; not counted.
    for op in [binary::opcode::FLUSH, binary::opcode::FLUSHQ] {
        let (out, close) = h.run(&mut Session::default(), &bin_flush(op));
        assert!(!close);
        assert_eq!(out.len(), 24 + 13, "{out:?}");
        assert_eq!((out[0], out[1]), (0x81, op));
        assert_eq!(u16::from_be_bytes([out[6], out[7]]), binary::status::AUTH_ERROR);
        assert_eq!(&out[24..], b"Auth failure.");
    }
    assert_eq!(counter(&h.rt.workers, "cmd_flush"), 3);
    assert_eq!(h.store.snapshot().curr_items, 1, "nothing was flushed");
    // The admin socket may flush.
    assert_eq!(h.text(&mut Session::admin(), "flush_all\r\n"), "OK\r\n");
    assert_eq!(h.text(&mut data, "get k\r\n"), "END\r\n");
}
