//! Verbs tests on a real RDMA device: two processes on `rxe0` inside the
//! Soft-RoCE VM (`tests/run-vm-suite.sh`). The test binary re-executes itself
//! as the peer (`peer_process` with LMC_VERBS_PEER set) and talks to it over a
//! TCP side channel on 127.0.0.1.
//!
//! Every test that needs a device is `#[ignore]`d, so a plain `cargo test` on a
//! host without RDMA lists them as ignored instead of silently passing; the
//! harness runs them with `--include-ignored` and LOGMEMCACHED_IN_VM=1. Run by
//! hand outside the VM they fail loudly.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logmemcached::bail;
use logmemcached::error::{Error, Result};
use logmemcached::memory::region::{Backing, HugePages, Region};
use logmemcached::rdma::connect::{barrier, exchange, handshake_rc};
use logmemcached::rdma::*;

const PEER_ENV: &str = "LMC_VERBS_PEER";
const PORT_ENV: &str = "LMC_VERBS_PORT";
const COUNT_ENV: &str = "LMC_VERBS_N";
const REGION_LEN: usize = 4 << 20;
const SIDE_TIMEOUT: Duration = Duration::from_secs(120);
const WC_TIMEOUT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ helpers

fn require_vm() {
    if std::env::var("LOGMEMCACHED_IN_VM").as_deref() != Ok("1") {
        panic!(
            "VM-only verbs test: run tests/run-vm-suite.sh (or set LOGMEMCACHED_IN_VM=1 on a host \
             with an RDMA device); it is #[ignore]d so plain `cargo test` skips it"
        );
    }
}

fn open_ctx() -> Result<Context> {
    let dev = std::env::var("LOGMEMCACHED_RDMA_DEV").ok();
    Context::open(dev.as_deref())
}

/// Deterministic pseudo-random bytes (splitmix64 words).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03;
    while out.len() < len {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {i}: got {:#04x}, want {:#04x}", got[i], want[i]);
    }
}

fn region_bytes(r: &Region) -> Vec<u8> {
    let mut v = vec![0u8; r.len()];
    r.read(0, &mut v);
    v
}

/// A peer process (this binary, re-executed) and its side channel.
struct Peer {
    child: Option<Child>,
    stream: TcpStream,
    role: String,
}

impl Peer {
    fn spawn(role: &str, extra_env: &[(&str, String)]) -> Peer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind side channel");
        let port = l.local_addr().unwrap().port();
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args(["--exact", "peer_process", "--ignored", "--nocapture", "--test-threads=1"])
            .env(PEER_ENV, role)
            .env(PORT_ENV, port.to_string());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning the peer process");
        // Wait (bounded) for the peer to dial in, failing fast if it died.
        l.set_nonblocking(true).unwrap();
        let t0 = Instant::now();
        let stream = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if let Ok(Some(st)) = child.try_wait() {
                        panic!("peer {role} exited before connecting: {st}");
                    }
                    if t0.elapsed() > SIDE_TIMEOUT {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("peer {role} did not connect within {SIDE_TIMEOUT:?}");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(SIDE_TIMEOUT)).unwrap();
        Peer { child: Some(child), stream, role: role.to_string() }
    }

    /// SIGKILL the peer (by its pid) and reap it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            eprintln!("killing peer {} (pid {})", self.role, c.id());
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait (bounded) for the peer to exit and require success.
    fn finish(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        let t0 = Instant::now();
        loop {
            match c.try_wait() {
                Ok(Some(st)) => {
                    assert!(st.success(), "peer {} failed: {st}", self.role);
                    return;
                }
                Ok(None) if t0.elapsed() < SIDE_TIMEOUT => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("peer {} did not exit", self.role);
                }
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Ask an rc-server peer for a new QP and connect ours to it.
fn connect_rc(peer: &mut Peer, pd: &ProtectionDomain, cq: &CompletionQueue, opts: &RcOptions) -> Result<RcQp> {
    peer.stream.write_all(b"N")?;
    let p = pd.create_rc_qp(cq, cq, &QpCaps::default(), opts)?;
    handshake_rc(&mut peer.stream, p, None, SIDE_TIMEOUT)
}

fn peer_crc(peer: &mut Peer) -> Result<u32> {
    peer.stream.write_all(b"H")?;
    let mut b = [0u8; 4];
    peer.stream.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn wait_ok(cq: &CompletionQueue, wr_id: u64) -> Result<()> {
    let wc = cq.wait_one(WC_TIMEOUT)?;
    wc.ok()?;
    if wc.wr_id() != wr_id {
        bail!("completion for wr_id {}, expected {wr_id}", wc.wr_id());
    }
    Ok(())
}

// ------------------------------------------------------------- peer roles

#[test]
#[ignore = "helper: the peer process of the VM tests; does nothing unless LMC_VERBS_PEER is set"]
fn peer_process() {
    let Ok(role) = std::env::var(PEER_ENV) else {
        eprintln!("peer_process: not started as a peer (LMC_VERBS_PEER unset); nothing to do");
        return;
    };
    let port: u16 = std::env::var(PORT_ENV).expect("LMC_VERBS_PORT").parse().expect("port");
    let s = TcpStream::connect(("127.0.0.1", port)).expect("dial the test process");
    s.set_read_timeout(Some(SIDE_TIMEOUT)).unwrap();
    let r = match role.as_str() {
        "rc-server" => rc_server(s),
        "ud-echo" => ud_echo(s),
        _ => Err(Error::new(format!("unknown peer role {role}"))),
    };
    if let Err(e) = r {
        panic!("peer {role} failed: {e}");
    }
}

/// Serves one 4 MiB huge-page region (pattern seed 1), registered once, to as
/// many RC QPs as the test asks for ('N'); 'H' replies with its CRC32C.
fn rc_server(mut s: TcpStream) -> Result<()> {
    let ctx = open_ctx()?;
    let pd = ctx.alloc_pd()?;
    let region = Region::anonymous(REGION_LEN, HugePages::Auto)?;
    let mut writer = region.take_writer().ok_or_else(|| Error::new("a fresh region has its writer"))?;
    region.write(&mut writer, 0, &pattern(1, REGION_LEN));
    let mr = pd.register(&region, Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_WRITE)?;
    let cq = ctx.create_cq(16, false)?;
    let mut qps = Vec::new();
    s.write_all(&[if region.backing() == Backing::HugeTlb { b'H' } else { b'N' }])?;
    loop {
        let mut cmd = [0u8; 1];
        match s.read_exact(&mut cmd) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        match cmd[0] {
            b'N' => {
                let p = pd.create_rc_qp(&cq, &cq, &QpCaps::default(), &RcOptions::default())?;
                qps.push(handshake_rc(&mut s, p, Some(mr.remote()), SIDE_TIMEOUT)?);
            }
            b'H' => s.write_all(&crc32c::crc32c(&region_bytes(&region)).to_be_bytes())?,
            b'Q' => return Ok(()),
            c => bail!("unknown command {c:#x}"),
        }
    }
}

/// Echoes LMC_VERBS_N UD datagrams back as "pong:<payload>", replying through
/// an address handle built from each receive's completion and GRH.
fn ud_echo(mut s: TcpStream) -> Result<()> {
    let n: usize = std::env::var(COUNT_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let ctx = open_ctx()?;
    let pd = ctx.alloc_pd()?;
    let scq = ctx.create_cq(64, true)?;
    let rcq = ctx.create_cq(64, true)?;
    let caps = QpCaps { max_send_wr: 32, max_recv_wr: 32, ..QpCaps::default() };
    let ud = pd.create_ud_qp(&scq, &rcq, &caps, &UdOptions::default())?;
    let slot = GRH_SIZE + ud.max_payload();
    let rbuf = pd.register_buffer(slot * 16, Access::LOCAL_WRITE)?;
    for i in 0..16 {
        ud.post_recv(i as u64, rbuf.slice(i * slot, slot)?)?;
    }
    let sbuf = pd.register_buffer(ud.max_payload(), Access::LOCAL_WRITE)?;
    let peer: UdEndpointInfo = exchange(&mut s, &ud.endpoint())?;
    for k in 0..n {
        let wc = rcq.wait_one(WC_TIMEOUT)?;
        wc.ok()?;
        let i = wc.wr_id() as usize;
        let len = (wc.byte_len() as usize).checked_sub(GRH_SIZE).ok_or_else(|| Error::new("short datagram"))?;
        let mut msg = vec![0u8; len];
        rbuf.read(i * slot + GRH_SIZE, &mut msg);
        let dest = ud.reply_dest(&wc, &rbuf, i * slot)?;
        if dest.qpn != peer.qpn {
            bail!("datagram from QPN {} but the test's QP is {}", dest.qpn, peer.qpn);
        }
        let reply = [b"pong:".as_slice(), &msg].concat();
        sbuf.write(0, &reply);
        ud.post_send(k as u64, sbuf.slice(0, reply.len())?, &dest, true)?;
        let swc = scq.wait_one(WC_TIMEOUT)?;
        swc.ok()?;
        ud.post_recv(i as u64, rbuf.slice(i * slot, slot)?)?;
    }
    barrier(&mut s, b'D')?;
    Ok(())
}

// -------------------------------------------------------------- host tests

#[test]
fn device_list_never_fails() {
    // Without RDMA (no VM): Ok(empty). In the VM: rxe0.
    let devs = devices().expect("device list");
    if std::env::var("LOGMEMCACHED_IN_VM").as_deref() == Ok("1") {
        assert!(!devs.is_empty(), "in the VM rxe0 must be there");
    } else {
        eprintln!(
            "devices on this host: {devs:?} (VM-only verbs tests are #[ignore]d; tests/run-vm-suite.sh runs them)"
        );
    }
    let mut out = Vec::new();
    print_devices(&mut out).expect("print_devices");
    let text = String::from_utf8_lossy(&out);
    eprint!("{text}");
    if devs.is_empty() {
        assert!(text.contains("no RDMA devices found"));
    } else {
        assert!(text.contains("GID["), "{text}");
    }
}

// ---------------------------------------------------------------- VM tests

#[test]
#[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
fn rc_read_and_write_4mib_huge_page_region() {
    require_vm();
    let mut peer = Peer::spawn("rc-server", &[]);
    let mut b = [0u8; 1];
    peer.stream.read_exact(&mut b).unwrap();
    eprintln!("peer region backing: {}", if b[0] == b'H' { "huge pages" } else { "normal pages" });

    let ctx = open_ctx().unwrap();
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(256, true).unwrap();
    let region = Region::anonymous(REGION_LEN, HugePages::Auto).unwrap();
    let mut writer = region.take_writer().unwrap();
    eprintln!("local region backing: {:?}", region.backing());
    assert_eq!(region.backing(), Backing::HugeTlb, "the harness reserves huge pages in the VM");
    assert_eq!(b[0], b'H', "peer's region must be huge-page backed too");
    let mr = pd.register(&region, Access::LOCAL_WRITE).unwrap();

    let qp = connect_rc(&mut peer, &pd, &cq, &RcOptions::default()).unwrap();
    let remote = qp.remote().mem;
    assert_eq!(remote.len, REGION_LEN as u64);
    eprintln!(
        "connected: local QP {} -> remote QP {} ({}), path MTU {}",
        qp.qpn(),
        qp.remote().qpn,
        qp.remote().gid,
        qp.path_mtu()
    );

    // Nothing pending: a blocking wait times out with 0, it does not hang.
    let mut wcs = Wc::batch(4);
    assert_eq!(cq.wait(&mut wcs, Some(Duration::from_millis(50))).unwrap(), 0);

    // 1. One 4 MiB READ, signaled.
    let t = Instant::now();
    qp.post_read(1, mr.all().unwrap(), remote.slice(0, REGION_LEN).unwrap(), true).unwrap();
    wait_ok(&cq, 1).unwrap();
    eprintln!("4 MiB READ in {:?}", t.elapsed());
    let want1 = pattern(1, REGION_LEN);
    assert_same("READ of the peer's region", &region_bytes(&region), &want1);

    // 2. 64 READs of 64 KiB, only the last signaled (RC completes in order).
    region.write(&mut writer, 0, &vec![0u8; REGION_LEN]);
    let chunk = 64 << 10;
    for i in 0..REGION_LEN / chunk {
        let last = i == REGION_LEN / chunk - 1;
        qp.post_read(
            10 + i as u64,
            mr.slice(i * chunk, chunk).unwrap(),
            remote.slice((i * chunk) as u64, chunk).unwrap(),
            last,
        )
        .unwrap();
    }
    wait_ok(&cq, 10 + (REGION_LEN / chunk - 1) as u64).unwrap();
    assert_same("chunked READ", &region_bytes(&region), &want1);

    // 3. WRITE a new pattern over the whole remote region; the peer checks it.
    let want2 = pattern(2, REGION_LEN);
    region.write(&mut writer, 0, &want2);
    qp.post_write(100, mr.all().unwrap(), remote.slice(0, REGION_LEN).unwrap(), true).unwrap();
    wait_ok(&cq, 100).unwrap();
    assert_eq!(peer_crc(&mut peer).unwrap(), crc32c::crc32c(&want2), "peer's region after WRITE");

    // 4. READ back a piece at an odd offset into a separate owned buffer.
    let back = pd.register_buffer(12345, Access::LOCAL_WRITE).unwrap();
    qp.post_read(101, back.all().unwrap(), remote.slice(777_777, 12345).unwrap(), true).unwrap();
    wait_ok(&cq, 101).unwrap();
    let mut got = vec![0u8; 12345];
    back.read(0, &mut got);
    assert_same("READ back after WRITE", &got, &want2[777_777..777_777 + 12345]);
    assert_eq!(qp.state().unwrap(), QpState::Rts);

    peer.stream.write_all(b"Q").unwrap();
    peer.finish();
}

#[test]
#[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
fn ud_send_recv_round_trip_with_address_handles() {
    require_vm();
    let n = 20;
    let mut peer = Peer::spawn("ud-echo", &[(COUNT_ENV, n.to_string())]);
    let ctx = open_ctx().unwrap();
    let pd = ctx.alloc_pd().unwrap();
    let scq = ctx.create_cq(64, true).unwrap();
    let rcq = ctx.create_cq(64, true).unwrap();
    let caps = QpCaps { max_send_wr: 32, max_recv_wr: 32, max_inline_data: 64, ..QpCaps::default() };
    let ud = pd.create_ud_qp(&scq, &rcq, &caps, &UdOptions::default()).unwrap();
    let slot = GRH_SIZE + ud.max_payload();
    let rbuf = pd.register_buffer(slot * 4, Access::LOCAL_WRITE).unwrap();
    for i in 0..4 {
        ud.post_recv(i as u64, rbuf.slice(i * slot, slot).unwrap()).unwrap();
    }
    let sbuf = pd.register_buffer(ud.max_payload(), Access::LOCAL_WRITE).unwrap();
    let peer_ep: UdEndpointInfo = exchange(&mut peer.stream, &ud.endpoint()).unwrap();
    eprintln!(
        "UD: local QP {} -> peer QP {} at {}, payload up to {} bytes",
        ud.qpn(),
        peer_ep.qpn,
        peer_ep.gid,
        ud.max_payload()
    );
    let dest = ud.dest(&peer_ep).unwrap();

    for k in 0..n {
        // Alternate a small (inline) and a full-MTU datagram.
        let msg: Vec<u8> = if k % 2 == 0 {
            format!("ping {k}").into_bytes()
        } else {
            let mut m = pattern(k as u64, ud.max_payload() - 5);
            m[..4].copy_from_slice(&(k as u32).to_be_bytes());
            m
        };
        sbuf.write(0, &msg);
        ud.post_send(1000 + k as u64, sbuf.slice(0, msg.len()).unwrap(), &dest, true).unwrap();
        wait_ok(&scq, 1000 + k as u64).unwrap();
        let wc = rcq.wait_one(WC_TIMEOUT).unwrap();
        wc.ok().unwrap();
        assert_eq!(wc.opcode(), WcOpcode::RECV);
        assert_eq!(wc.src_qp(), peer_ep.qpn, "reply must come from the peer's QP");
        let i = wc.wr_id() as usize;
        let len = wc.byte_len() as usize - GRH_SIZE;
        let mut got = vec![0u8; len];
        rbuf.read(i * slot + GRH_SIZE, &mut got);
        assert_same(&format!("pong {k}"), &got, &[b"pong:".as_slice(), &msg].concat());
        ud.post_recv(i as u64, rbuf.slice(i * slot, slot).unwrap()).unwrap();
    }
    // Too large for one datagram: refused before it reaches the NIC.
    let big = pd.register_buffer(ud.max_payload() + 1, Access::LOCAL_WRITE).unwrap();
    assert!(ud.post_send(9, big.all().unwrap(), &dest, true).is_err());

    barrier(&mut peer.stream, b'D').unwrap();
    peer.finish();
}

#[test]
#[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
fn peer_killed_mid_transfer_gives_an_error_completion() {
    require_vm();
    let mut peer = Peer::spawn("rc-server", &[]);
    let mut b = [0u8; 1];
    peer.stream.read_exact(&mut b).unwrap();
    let ctx = open_ctx().unwrap();
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(64, true).unwrap();
    let buf = pd.register_buffer(4 << 20, Access::LOCAL_WRITE).unwrap();
    // Small retry budget: 2 retries of a ~4 ms ACK timeout.
    let opts = RcOptions { timeout: 10, retry_cnt: 2, ..RcOptions::default() };
    let qp = connect_rc(&mut peer, &pd, &cq, &opts).unwrap();
    let remote = qp.remote().mem;
    let mib = 1 << 20;
    qp.post_read(1, buf.slice(0, mib).unwrap(), remote.slice(0, mib).unwrap(), true).unwrap();
    wait_ok(&cq, 1).unwrap();

    // Stream 256 KiB READs, 16 outstanding, while another thread SIGKILLs the
    // peer process (by its pid) once 8 of them have completed: the kill lands
    // mid-transfer, with READs in flight.
    let chunk = 256 << 10;
    let done = Arc::new(AtomicU64::new(0));
    let mut child = peer.child.take().expect("peer process");
    let killer = {
        let done = done.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while done.load(Ordering::Acquire) < 8 && t0.elapsed() < SIDE_TIMEOUT {
                std::thread::yield_now();
            }
            let before = done.load(Ordering::Acquire);
            eprintln!("killing peer rc-server (pid {}) after {before} READs", child.id());
            let t = Instant::now();
            child.kill().expect("kill the peer");
            child.wait().expect("reap the peer");
            (t, before)
        })
    };
    let post = |id: u64| {
        let i = (id % 16) as usize;
        qp.post_read(id, buf.slice(i * chunk, chunk).unwrap(), remote.slice((i * chunk) as u64, chunk).unwrap(), true)
    };
    let mut next = 100u64;
    for _ in 0..16 {
        post(next).unwrap();
        next += 1;
    }
    let t0 = Instant::now();
    let mut wcs = Wc::batch(16);
    let err = 'outer: loop {
        let left = Duration::from_secs(120).saturating_sub(t0.elapsed());
        assert!(!left.is_zero(), "no error completion 120 s after the transfer started: that is a hang");
        let n = cq.wait(&mut wcs, Some(left)).unwrap();
        for wc in &wcs[..n] {
            match wc.ok() {
                Ok(_) => {
                    done.fetch_add(1, Ordering::Release);
                    post(next).unwrap(); // keep the transfer going until the transport gives up
                    next += 1;
                }
                Err(e) => break 'outer e,
            }
        }
    };
    let t_err = Instant::now();
    let (t_kill, before) = killer.join().expect("killer thread");
    let total = done.load(Ordering::Acquire);
    eprintln!(
        "dead peer: {err}, {:?} after the kill; {total} READs succeeded ({before} before the kill), posted {}",
        t_err.saturating_duration_since(t_kill),
        next - 100
    );
    assert_eq!(err.status, WcStatus::RETRY_EXC_ERR, "a silent peer exhausts the transport retries: {err}");
    // Surfaces as the crate's error with the status name.
    let e: Error = err.into();
    assert!(e.to_string().contains("IBV_WC_RETRY_EXC_ERR"), "{e}");
    assert_eq!(qp.state().unwrap(), QpState::Err);
}

#[test]
#[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
fn bad_rkey_is_a_remote_access_error_not_corruption() {
    require_vm();
    let mut peer = Peer::spawn("rc-server", &[]);
    let mut b = [0u8; 1];
    peer.stream.read_exact(&mut b).unwrap();
    let ctx = open_ctx().unwrap();
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(16, true).unwrap();
    let buf = pd.register_buffer(64 << 10, Access::LOCAL_WRITE).unwrap();
    let before = crc32c::crc32c(&pattern(1, REGION_LEN));
    assert_eq!(peer_crc(&mut peer).unwrap(), before);

    type Target = fn(RemoteMemory) -> RemoteSlice;
    let cases: [(&str, bool, Target); 3] = [
        ("READ with a wrong rkey", false, |m| RemoteSlice { addr: m.addr, rkey: m.rkey ^ 0x00ab_cd00, len: 64 << 10 }),
        ("WRITE with a wrong rkey", true, |m| RemoteSlice { addr: m.addr, rkey: m.rkey ^ 0x00ab_cd00, len: 64 << 10 }),
        ("WRITE past the end of the region", true, |m| RemoteSlice {
            addr: m.addr + m.len - 4096,
            rkey: m.rkey,
            len: 64 << 10,
        }),
    ];
    for (what, write, target) in cases {
        buf.write(0, &vec![0xab; 64 << 10]);
        // A QP that saw an error is in ERR state: one fresh QP per case.
        let qp = connect_rc(&mut peer, &pd, &cq, &RcOptions::default()).unwrap();
        let slice = target(qp.remote().mem);
        if write {
            qp.post_write(7, buf.all().unwrap(), slice, true).unwrap();
        } else {
            qp.post_read(7, buf.all().unwrap(), slice, true).unwrap();
        }
        let wc = cq.wait_one(WC_TIMEOUT).unwrap();
        let err = wc.ok().expect_err(what);
        eprintln!("{what}: {err}");
        assert_eq!(err.status, WcStatus::REM_ACCESS_ERR, "{what}");
        assert_eq!(err.wr_id, 7);
        let e: Error = err.into();
        assert!(e.to_string().contains("IBV_WC_REM_ACCESS_ERR (remote access error)"), "{e}");
        // Nothing was corrupted on either side.
        let mut local = vec![0u8; 64 << 10];
        buf.read(0, &mut local);
        assert!(local.iter().all(|&x| x == 0xab), "{what}: local buffer changed");
        assert_eq!(peer_crc(&mut peer).unwrap(), before, "{what}: peer's region changed");
    }
    peer.stream.write_all(b"Q").unwrap();
    peer.finish();
}

// ------------------------------------------- replication: the trust boundary

mod replication_trust {
    use super::*;
    use logmemcached::auth::{self, AuthToken, Channel};
    use logmemcached::log::control::{CONTROL_SIZE, MAX_REPLICAS, OFF_EPOCH, OFF_SLOTS, SLOT_LEN, SLOT_REPLICA_ID};
    use logmemcached::replication::transport::Transport;
    use logmemcached::replication::verbs::{listen, VerbsTransport};

    fn token(b: u8) -> AuthToken {
        AuthToken::new(&[b; 32]).unwrap()
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// A primary's region (a log pattern after the control block) offered
    /// over rdma:// on 127.0.0.1 with `token`; returns it and the port.
    fn primary(t: &AuthToken) -> (Arc<Region>, u16) {
        let region = Arc::new(Region::anonymous(REGION_LEN, HugePages::Off).unwrap());
        let mut w = region.take_writer().unwrap();
        region.write(&mut w, CONTROL_SIZE, &pattern(9, REGION_LEN - CONTROL_SIZE));
        let port = free_port();
        listen(region.clone(), "127.0.0.1", port, Some(t.clone()), true).unwrap();
        (region, port)
    }

    /// The region as the NIC left it (racy reads: it may be writing).
    fn snapshot(r: &Region) -> Vec<u8> {
        let mut v = vec![0u8; r.len()];
        r.read_racy(0, &mut v);
        v
    }

    fn slot_ids(r: &Region) -> Vec<u64> {
        (0..MAX_REPLICAS)
            .map(|i| r.atomic_u64(OFF_SLOTS + i * SLOT_LEN + SLOT_REPLICA_ID).load(Ordering::Acquire))
            .collect()
    }

    #[test]
    #[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
    fn vm_a_replica_writes_only_its_own_slot() {
        require_vm();
        let t = token(1);
        let (region, port) = primary(&t);
        let connect = |id| VerbsTransport::connect("127.0.0.1", port, id, Some(&t)).unwrap();
        let mut a = connect(0xa1);
        let b = connect(0xb2);
        assert_eq!((a.slot(), b.slot()), (0, 1));
        assert_eq!(a.slot_memory().len, SLOT_LEN as u64, "a replica is told of its slot alone");
        // Its own slot: written.
        a.probe_write(a.slot_memory(), &7u64.to_le_bytes()).unwrap();
        assert_eq!(region.atomic_u64(OFF_SLOTS).load(Ordering::Acquire), 7);

        let evil = [0xeeu8; 40];
        type Aim = fn(&VerbsTransport) -> RemoteMemory;
        let aims: [(&str, Aim); 4] = [
            ("the next slot, with our slot's rkey", |v| RemoteMemory {
                addr: v.slot_memory().addr + 64,
                ..v.slot_memory()
            }),
            ("the next slot, with the log's rkey", |v| RemoteMemory {
                addr: v.log_memory().addr + (OFF_SLOTS + 64) as u64,
                ..v.log_memory()
            }),
            ("the epoch, with the log's rkey", |v| RemoteMemory {
                addr: v.log_memory().addr + OFF_EPOCH as u64,
                ..v.log_memory()
            }),
            ("the log, with the log's rkey", |v| RemoteMemory {
                addr: v.log_memory().addr + (1 << 20),
                ..v.log_memory()
            }),
        ];
        for (what, aim) in aims {
            // A QP that saw an error is in ERR state: reconnect (same id, same slot).
            let mut v = connect(0xa1);
            assert_eq!(v.slot(), 0);
            let before = snapshot(&region);
            let e = v.probe_write(aim(&v), &evil).expect_err(what).to_string();
            assert!(e.contains("IBV_WC_REM_ACCESS_ERR"), "{what}: {e}");
            assert_same(what, &snapshot(&region), &before);
        }
        assert_eq!(slot_ids(&region)[1], 0xb2, "the other replica's slot is intact");
        drop(a);
    }

    #[test]
    #[ignore = "needs an RDMA device: run tests/run-vm-suite.sh"]
    fn vm_strangers_get_no_slot_and_a_real_replica_joins_after_100_of_them() {
        require_vm();
        let t = token(1);
        let (region, port) = primary(&t);
        let before = snapshot(&region);
        for i in 0..100u64 {
            let wrong = (i % 2 == 1).then(|| token(2));
            let e = match VerbsTransport::connect("127.0.0.1", port, 0x100 + i, wrong.as_ref()) {
                Ok(_) => panic!("a replica with {} got in", if wrong.is_some() { "a wrong token" } else { "no token" }),
                Err(e) => e.to_string(),
            };
            assert!(e.contains("requires a token") || e.contains("proof is wrong"), "{e}");
        }
        // The old, unauthenticated hello: closed without a byte.
        let mut old = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut hello = b"LMRP\x01".to_vec();
        hello.extend_from_slice(&0x99u64.to_le_bytes());
        hello.resize(auth::HELLO_LEN, 0);
        old.write_all(&hello).unwrap();
        let mut got = Vec::new();
        old.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = old.read_to_end(&mut got);
        assert!(got.is_empty(), "an unauthenticated hello was answered: {got:?}");
        assert_same("the slots after 101 strangers", &snapshot(&region), &before);

        // One that authenticates and then hangs up mid-setup leaves nothing held.
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut b = auth::Bounded::new(&s, Instant::now() + SIDE_TIMEOUT, SIDE_TIMEOUT);
        auth::client_handshake(&mut b, Channel::Replication, Some(&t)).unwrap();
        let mut hello = b"LMRP\x02".to_vec();
        hello.extend_from_slice(&0x77u64.to_le_bytes());
        b.write_all(&hello).unwrap();
        let mut reply = [0u8; 25];
        b.read_exact(&mut reply).unwrap();
        assert_eq!(reply[0], 0, "an authenticated replica gets a slot");
        assert_eq!(slot_ids(&region)[0], 0x77);
        drop(s);
        let deadline = Instant::now() + Duration::from_secs(20);
        while slot_ids(&region)[0] != 0 {
            assert!(Instant::now() < deadline, "the slot of a replica that never connected is still held");
            std::thread::yield_now();
        }
        // And a real replica joins, in the first slot.
        let r = VerbsTransport::connect("127.0.0.1", port, 0x5e, Some(&t)).unwrap();
        assert_eq!(r.slot(), 0);
        assert_eq!(slot_ids(&region)[0], 0x5e);
    }
}
