//! Debian's own tools, unchanged, against logmemcached and against Debian's
//! memcached holding the same items: `memcached-tool` (shipped in the
//! memcached package) `stats`, `settings`, `display` and `dump`. Their
//! output must have the same shape, and `dump` must reproduce the items.
mod common;
use common::*;
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MEMCACHED: &str = "/usr/bin/memcached";
const MEMCACHED_TOOL: &str = "/usr/share/memcached/scripts/memcached-tool";

fn tools_present() -> bool {
    peer(MEMCACHED, std::path::Path::new(MEMCACHED).exists())
        && peer(MEMCACHED_TOOL, std::path::Path::new(MEMCACHED_TOOL).exists())
        && peer("perl", have("perl", "-v"))
}

/// `memcached-tool 127.0.0.1:PORT mode`: its standard output.
fn tool(port: u16, mode: &str) -> String {
    let out = Command::new("perl")
        .args([MEMCACHED_TOOL, &format!("127.0.0.1:{port}"), mode])
        .stdin(Stdio::null())
        .output()
        .expect("running memcached-tool");
    assert!(out.status.success(), "memcached-tool {mode}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("memcached-tool prints text")
}

/// The items every test loads: flags, TTLs, empty, binary-ish and larger
/// values, and keys memcached-tool has to URI-decode.
fn items() -> Vec<(String, u32, i64, Vec<u8>)> {
    let mut v = vec![
        ("plain".to_string(), 0, 0, b"value".to_vec()),
        ("flags".into(), 42, 0, b"with flags".to_vec()),
        ("ttl".into(), 7, 1000, b"expires later".to_vec()),
        ("empty".into(), 0, 0, Vec::new()),
        ("pct%key".into(), 1, 0, b"a % in the key".to_vec()),
        ("colon:key/x".into(), 2, 0, b"bytes\x00\x01\xff in the value".to_vec()),
        ("big".into(), 3, 0, vec![b'b'; 100_000]),
    ];
    for i in 0..20 {
        v.push((format!("many:{i}"), i, 0, format!("v{i}").into_bytes()));
    }
    v
}

fn load(port: u16) {
    let mut c = Client::connect(port);
    for (k, f, exp, v) in items() {
        c.send(format!("set {k} {f} {exp} {}\r\n", v.len()).as_bytes());
        c.send(&v);
        assert_eq!(c.cmd("\r\n"), "STORED\r\n", "set {k}");
    }
    // Fetch one, so `fetch=yes` appears in a dump.
    assert!(c.gets("plain").is_some());
}

/// A dump (`add key flags exp len\r\nvalue\r\n` ...) as key -> (flags, exp, value).
fn parse_dump(b: &[u8]) -> BTreeMap<String, (u32, i64, Vec<u8>)> {
    let mut m = BTreeMap::new();
    let mut i = 0;
    while i < b.len() {
        let nl = b[i..].iter().position(|&c| c == b'\n').expect("a dump line ends") + i;
        let line = std::str::from_utf8(&b[i..nl]).unwrap().trim_end_matches('\r');
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!((f.len(), f[0]), (5, "add"), "dump line {line:?}");
        let len: usize = f[4].parse().unwrap();
        let value = b[nl + 1..nl + 1 + len].to_vec();
        assert_eq!(&b[nl + 1 + len..nl + 3 + len], b"\r\n");
        m.insert(f[1].to_string(), (f[2].parse().unwrap(), f[3].parse().unwrap(), value));
        i = nl + 3 + len;
    }
    m
}

#[test]
fn memcached_tool_dump_reproduces_the_items_as_with_memcached() {
    if !tools_present() {
        return;
    }
    let mc = Memcached::start();
    let lm = Server::start(&["-m", "64"]);
    load(mc.port);
    load(lm.port);
    // Bytes, not text: one value is not UTF-8.
    let dump = |port| {
        let out = Command::new("perl")
            .args([MEMCACHED_TOOL, &format!("127.0.0.1:{port}"), "dump"])
            .output()
            .expect("memcached-tool dump");
        assert!(out.status.success());
        out.stdout
    };
    let (da, db) = (dump(mc.port), dump(lm.port));
    let (ma, mb) = (parse_dump(&da), parse_dump(&db));
    let expected: BTreeMap<String, (u32, Vec<u8>)> = items().into_iter().map(|(k, f, _, v)| (k, (f, v))).collect();
    for (name, m) in [("memcached", &ma), ("logmemcached", &mb)] {
        let got: BTreeMap<String, (u32, Vec<u8>)> =
            m.iter().map(|(k, (f, _, v))| (k.clone(), (*f, v.clone()))).collect();
        assert_eq!(got, expected, "{name}'s dump");
        // Absolute expiry for the item with a TTL, 0 for the others.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        for (k, (_, exp, _)) in m {
            if k == "ttl" {
                assert!((exp - (now + 1000)).abs() <= 2, "{name}: ttl's exp {exp}");
            } else {
                assert_eq!(*exp, 0, "{name}: {k}");
            }
        }
    }
    // The dump, replayed into a fresh server, reproduces the items.
    let fresh = Server::start(&["-m", "64"]);
    let mut c = Client::connect(fresh.port);
    c.send(&db);
    for _ in 0..mb.len() {
        assert_eq!(c.line(), "STORED\r\n");
    }
    for (k, (f, v)) in &expected {
        let (got, flags, _) = c.gets(k).unwrap_or_else(|| panic!("{k} missing after replaying the dump"));
        assert_eq!((&got, flags), (v, *f), "{k}");
    }
}

/// The non-empty lines of a memcached-tool report, each split into fields.
fn rows(s: &str) -> Vec<Vec<String>> {
    s.lines().filter(|l| !l.trim().is_empty()).map(|l| l.split_whitespace().map(String::from).collect()).collect()
}

#[test]
fn memcached_tool_stats_settings_display_have_memcached_shape() {
    if !tools_present() {
        return;
    }
    let mc = Memcached::start();
    let lm = Server::start(&["-m", "64"]);
    load(mc.port);
    load(lm.port);
    for mode in ["stats", "settings"] {
        let (a, b) = (tool(mc.port, mode), tool(lm.port, mode));
        let (ra, rb) = (rows(&a), rows(&b));
        // Header: "#ADDR Field Value".
        assert_eq!(ra[0][1..], rb[0][1..], "{mode} header\n{a}\n{b}");
        // Then "name value" rows; the names memcached-tool users read are there.
        let name_ok = |n: &str| n.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
        assert!(rb[1..].iter().all(|r| name_ok(&r[0])), "{mode}: {b}");
        let names = |r: &[Vec<String>]| r[1..].iter().map(|r| r[0].clone()).collect::<Vec<_>>();
        let want: &[&str] = if mode == "stats" {
            &["curr_items", "total_items", "bytes", "get_hits", "get_misses", "evictions", "limit_maxbytes", "uptime"]
        } else {
            &["maxbytes", "maxconns", "tcpport", "item_size_max", "cas_enabled", "evictions"]
        };
        for n in want {
            assert!(names(&ra).iter().any(|x| x == n), "memcached's {mode} has {n}");
            assert!(names(&rb).iter().any(|x| x == n), "our {mode} lacks {n}:\n{b}");
        }
        let value = |r: &[Vec<String>], n: &str| r.iter().find(|r| r[0] == n).and_then(|r| r.get(1)).cloned();
        if mode == "stats" {
            assert_eq!(value(&rb, "curr_items"), Some(items().len().to_string()));
            assert_eq!(value(&ra, "curr_items"), value(&rb, "curr_items"));
        }
    }
    // display: the same header, then one row per class that holds items;
    // ours is the log's one class holding every item.
    let (a, b) = (tool(mc.port, "display"), tool(lm.port, "display"));
    let (ra, rb) = (rows(&a), rows(&b));
    assert_eq!(ra[0], rb[0], "display header\n{a}\n{b}");
    assert_eq!(rb.len(), 2, "one class:\n{b}");
    let row = &rb[1];
    // "#  Item_Size  Max_age   Pages   Count   Full?  Evicted Evict_Time OOM"
    assert_eq!(row.len(), ra[1].len(), "a row has memcached's columns:\n{a}\n{b}");
    assert_eq!(row[0], "1");
    assert_eq!(row[4], items().len().to_string(), "Count");
    assert_eq!(row[5], "no", "Full?");
    let count_a: usize = ra[1..].iter().map(|r| r[4].parse::<usize>().unwrap()).sum();
    assert_eq!(count_a, items().len(), "memcached's classes hold the items too");
}

/// `lru_crawler metadump` lines as memcached prints them (what the dump
/// tools parse), and the crawler's other subcommands answered as memcached
/// 1.6.18 answers them.
#[test]
fn lru_crawler_answers_as_memcached() {
    if !peer(MEMCACHED, std::path::Path::new(MEMCACHED).exists()) {
        return;
    }
    let mc = Memcached::start();
    let lm = Server::start(&["-m", "64"]);
    let (mut a, mut b) = (Client::connect(mc.port), Client::connect(lm.port));
    for c in [&mut a, &mut b] {
        assert_eq!(c.cmd("set k%1 5 0 1\r\nv\r\n"), "STORED\r\n");
        assert_eq!(c.cmd("set t 0 1000 3\r\nabc\r\n"), "STORED\r\n");
        c.send(b"get t\r\n");
        c.until("END\r\n");
    }
    // Lines without the times and the CAS (they differ), sorted (order is the
    // server's walk).
    let dump = |c: &mut Client, arg: &str| -> Vec<String> {
        c.send(format!("lru_crawler metadump {arg}\r\n").as_bytes());
        let mut v: Vec<String> = c
            .until("END\r\n")
            .iter()
            .map(|l| {
                l.split(' ').filter(|f| !f.starts_with("la=") && !f.starts_with("cas=")).collect::<Vec<_>>().join(" ")
            })
            .map(|l| {
                if l.contains(" exp=-1") {
                    l
                } else {
                    l.split(' ').filter(|f| !f.starts_with("exp=")).collect::<Vec<_>>().join(" ")
                }
            })
            .collect();
        v.sort();
        v
    };
    for arg in ["all", "hash", "1", "1,2", "5"] {
        let (da, db) = (dump(&mut a, arg), dump(&mut b, arg));
        assert_eq!(da, db, "metadump {arg}");
    }
    let want = ["END\r\n", "key=k%251 exp=-1 fetch=no cls=1 size=67\n", "key=t fetch=yes cls=1 size=63\n"];
    assert_eq!(dump(&mut b, "all"), want.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    // Absolute times, as memcached prints them.
    b.send(b"lru_crawler metadump all\r\n");
    let lines = b.until("END\r\n");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let field =
        |l: &str, f: &str| -> i64 { l.split(' ').find_map(|x| x.strip_prefix(f)).unwrap().trim().parse().unwrap() };
    let t = lines.iter().find(|l| l.starts_with("key=t ")).unwrap();
    assert!((field(t, "exp=") - (now + 1000)).abs() <= 2, "{t}");
    assert!((field(t, "la=") - now).abs() <= 2, "{t}");
    for req in [
        "lru_crawler metadump 99",
        "lru_crawler metadump 0",
        "lru_crawler metadump a",
        "lru_crawler metadump",
        "lru_crawler metadump all extra",
        "lru_crawler crawl 99",
        "lru_crawler crawl",
        "lru_crawler sleep x",
        "lru_crawler sleep 2000000",
        "lru_crawler sleep 10",
        "lru_crawler tocrawl x",
        "lru_crawler tocrawl 10",
        "lru_crawler",
        "lru_crawler foo",
        "lru_crawler mgdump 1",
    ] {
        let req = format!("{req}\r\n");
        assert_eq!(b.cmd(&req), a.cmd(&req), "{req}");
    }
}

const MEMCASLAP: &str = "/usr/bin/memcaslap";

/// A field `name: N` of memcaslap's report.
fn caslap_field(report: &str, name: &str) -> u64 {
    let prefix = format!("{name}: ");
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix(&prefix).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("memcaslap's report has no {name}:\n{report}"))
}

/// memcaslap (libmemcached-tools) in its modes: text, multi-get
/// (`--division`), binary (`-B`). Each run's own counts must be what the
/// server counted, with no protocol error. (UDP is not served: `-U 0` is
/// the only UDP setting, so memcaslap's `--udp` is not run.)
#[test]
fn memcaslap_modes_are_served_and_counted() {
    if !peer(MEMCASLAP, std::path::Path::new(MEMCASLAP).exists()) {
        return;
    }
    let lm = Server::start(&["-m", "64"]);
    let mut c = Client::connect(lm.port);
    for mode in [&[][..], &["--division=10"][..], &["-B"][..], &["-B", "--division=10"][..]] {
        let before = c.stats("");
        let out = Command::new(MEMCASLAP)
            .args(["-s", &format!("127.0.0.1:{}", lm.port), "-x", "3000", "-T", "1", "-c", "4"])
            .args(mode)
            .stdin(Stdio::null())
            .output()
            .expect("running memcaslap");
        let report = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "memcaslap {mode:?}: {report}{}", String::from_utf8_lossy(&out.stderr));
        let after = c.stats("");
        let delta = |k: &str| after[k].parse::<u64>().unwrap() - before[k].parse::<u64>().unwrap();
        let (gets, sets, misses) =
            (caslap_field(&report, "cmd_get"), caslap_field(&report, "cmd_set"), caslap_field(&report, "get_misses"));
        assert!(gets > 0 && sets > 0, "memcaslap {mode:?} did work: {report}");
        assert_eq!(delta("protocol_errors"), 0, "memcaslap {mode:?}");
        assert_eq!(delta("cmd_set"), sets, "memcaslap {mode:?}: {report}");
        assert_eq!(delta("cmd_get"), gets, "memcaslap {mode:?}: {report}");
        assert_eq!(delta("get_misses"), misses, "memcaslap {mode:?}: {report}");
        assert_eq!(delta("get_hits"), gets - misses, "memcaslap {mode:?}");
    }
}

const NUTCRACKER: &str = "/usr/sbin/nutcracker";

/// twemproxy (Debian's nutcracker) on a free port in front of `servers`,
/// killed (by its pid) on drop.
struct Nutcracker {
    port: u16,
    child: Child,
    dir: std::path::PathBuf,
}

impl Nutcracker {
    fn start(servers: &[u16]) -> Nutcracker {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("lm-nutcracker-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // ketama with md5, as libmemcached's weighted ketama; no server
        // names, so each point is named "host:port-j" as libmemcached does.
        let mut conf = format!(
            "pool:\n  listen: 127.0.0.1:{port}\n  hash: md5\n  distribution: ketama\n  timeout: 5000\n  \
             auto_eject_hosts: false\n  servers:\n"
        );
        for p in servers {
            conf.push_str(&format!("   - 127.0.0.1:{p}:1\n"));
        }
        let conf_path = dir.join("nutcracker.yml");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(NUTCRACKER)
            .arg("-c")
            .arg(&conf_path)
            .arg("-o")
            .arg(dir.join("nutcracker.log"))
            .arg("-p")
            .arg(dir.join("nutcracker.pid"))
            .args(["-s", &free_port().to_string(), "-a", "127.0.0.1"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawning nutcracker");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nutcracker did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nutcracker { port, child, dir }
    }
}

impl Drop for Nutcracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// twemproxy with ketama in front of three logmemcached servers: keys
/// shard across all three, each on the server our own client's ketama
/// (libmemcached's) names, and multi-gets through the proxy return every key.
#[test]
fn nutcracker_shards_by_ketama_over_three_servers() {
    if !peer(NUTCRACKER, std::path::Path::new(NUTCRACKER).exists()) {
        return;
    }
    let servers: Vec<Server> = (0..3).map(|_| Server::start(&["-m", "16"])).collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    let proxy = Nutcracker::start(&ports);
    let mut c = Client::connect(proxy.port);
    let keys: Vec<String> = (0..300).map(|i| format!("shard:{i}")).collect();
    for k in &keys {
        assert_eq!(c.cmd(&format!("set {k} 0 0 {}\r\n{k}\r\n", k.len())), "STORED\r\n", "{k}");
    }
    // Every server holds some, and each key is where libmemcached's ketama puts it.
    let ring = logmemcached::client::ketama::Ketama::new(
        &ports.iter().map(|p| ("127.0.0.1".to_string(), *p)).collect::<Vec<_>>(),
    );
    let mut direct: Vec<Client> = ports.iter().map(|p| Client::connect(*p)).collect();
    let mut per_server = [0usize; 3];
    for k in &keys {
        let owner = ring.server_for(k.as_bytes());
        assert!(direct[owner].gets(k).is_some(), "{k} is not on server {owner}, where ketama puts it");
        per_server[owner] += 1;
    }
    assert!(per_server.iter().all(|&n| n > 30), "keys shard across all three: {per_server:?}");
    for (i, d) in direct.iter_mut().enumerate() {
        assert_eq!(d.stats("")["curr_items"], per_server[i].to_string(), "server {i}");
    }
    // Multi-gets through the proxy (which splits them per server) return every key.
    for chunk in keys.chunks(50) {
        c.send(format!("get {}\r\n", chunk.join(" ")).as_bytes());
        let lines = c.until("END\r\n");
        let got: Vec<&str> =
            lines.iter().filter_map(|l| l.strip_prefix("VALUE ")).map(|l| l.split(' ').next().unwrap()).collect();
        let mut want: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        want.sort();
        assert_eq!(got_sorted, want);
    }
    for s in &mut direct {
        assert_eq!(s.stats("")["protocol_errors"], "0");
    }
}
