//! The meta protocol over TCP against the real binary: every command and
//! flag memcached clients use, base64 keys, and the bad-input list (each a
//! `CLIENT_ERROR` as memcached 1.6 words it, the connection surviving).
mod common;
use common::*;

fn server() -> (Server, Client) {
    let s = Server::start(&["-m", "8"]);
    let c = s.connect();
    (s, c)
}

/// Replace every `c<digits>` token by `c#` (CAS values are ours to pick).
fn nocas(s: &str) -> String {
    s.split(' ')
        .map(|t| {
            if t.len() > 1 && t.starts_with('c') && t[1..].trim_end().chars().all(|c| c.is_ascii_digit()) {
                format!("c#{}", if t.ends_with("\r\n") { "\r\n" } else { "" })
            } else {
                t.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn cas_of(line: &str) -> u64 {
    line.split_whitespace().find_map(|t| t.strip_prefix('c').and_then(|n| n.parse().ok())).expect("a c flag")
}

#[test]
fn mn_and_pipelined_quiet_mode() {
    let (_s, mut c) = server();
    assert_eq!(c.cmd("mn\r\n"), "MN\r\n");
    // q: nominal replies (HD for ms/md/ma, EN for mg) are left out; errors stay.
    c.send(b"ms a 1 q\r\nx\r\nmg miss v q\r\nmd miss q\r\nma miss q\r\nmg a v q\r\nmn\r\n");
    assert_eq!(c.line(), "NF\r\n");
    assert_eq!(c.line(), "NF\r\n");
    assert_eq!(c.line(), "VA 1\r\n");
    assert_eq!(c.line(), "x\r\n");
    assert_eq!(c.line(), "MN\r\n");
}

#[test]
fn mg_flags_v_k_c_f_t_s_h_l_o() {
    let (_s, mut c) = server();
    let set = c.cmd("ms foo 3 F5 T100 c\r\nbar\r\n");
    let cas = cas_of(&set);
    assert_eq!(c.cmd("mg foo v k c f s h l O123\r\n"), format!("VA 3 kfoo c{cas} f5 s3 h0 l0 O123\r\n"));
    assert_eq!(c.line(), "bar\r\n");
    let t = c.cmd("mg foo t h\r\n");
    assert!(t == "HD t100 h1\r\n" || t == "HD t99 h1\r\n", "{t}");
    assert_eq!(c.cmd("mg foo\r\n"), "HD\r\n");
    assert_eq!(c.cmd("mg miss v k O9\r\n"), "EN kmiss O9\r\n");
    assert_eq!(c.cmd("mg miss\r\n"), "EN\r\n");
    // A flag is its first byte; what follows is ignored where it takes no argument.
    assert_eq!(c.cmd("mg foo kv\r\n"), "HD kfoo\r\n");
    // u: do not note the access; the P and L proxy hints are accepted.
    assert_eq!(c.cmd("mg foo u P L\r\n"), "HD\r\n");
}

#[test]
fn mg_t_touches_and_t_reports_in_line_order() {
    let (_s, mut c) = server();
    c.cmd("ms k 2 T100\r\nab\r\n");
    let r = c.cmd("mg k t T0 v\r\n");
    assert!(r == "VA 2 t100\r\n" || r == "VA 2 t99\r\n", "{r}");
    assert_eq!(c.line(), "ab\r\n");
    assert_eq!(c.cmd("mg k t\r\n"), "HD t-1\r\n");
    assert_eq!(c.cmd("mg k T-1\r\n"), "HD\r\n");
    assert_eq!(c.cmd("mg k\r\n"), "EN\r\n", "a negative T expires it");
}

#[test]
fn mg_n_vivifies_once_and_hands_out_one_win_token() {
    let (_s, mut c) = server();
    let first = nocas(&c.cmd("mg viv N30 c t v s\r\n"));
    assert_eq!(first, "VA 0 c# t30 s0 W\r\n");
    assert_eq!(c.line(), "\r\n");
    let second = nocas(&c.cmd("mg viv N30 c v\r\n"));
    assert_eq!(second, "VA 0 c# Z\r\n");
    assert_eq!(c.line(), "\r\n");
    // The winner fills it in; a fresh item has no token out.
    assert_eq!(c.cmd("ms viv 3\r\nnew\r\n"), "HD\r\n");
    assert_eq!(c.cmd("mg viv v\r\n"), "VA 3\r\n");
    assert_eq!(c.line(), "new\r\n");
}

#[test]
fn mg_r_recache_wins_once() {
    let (_s, mut c) = server();
    c.cmd("ms k 1 T100\r\nz\r\n");
    assert_eq!(c.cmd("mg k R30\r\n"), "HD\r\n", "expires later than the recache window");
    assert_eq!(c.cmd("mg k R200\r\n"), "HD W\r\n");
    assert_eq!(c.cmd("mg k R200\r\n"), "HD Z\r\n");
}

#[test]
fn md_i_invalidates_then_ms_i_stores_stale() {
    let (_s, mut c) = server();
    let cas = cas_of(&c.cmd("ms s 2 c T100\r\nv1\r\n"));
    assert_eq!(c.cmd(&format!("md s I T30 C{}\r\n", cas + 1)), "EX\r\n");
    assert_eq!(c.cmd("md s I T30\r\n"), "HD\r\n");
    let r = c.cmd("mg s c t v\r\n");
    let stale_cas = cas_of(&r);
    assert!(stale_cas > cas, "invalidation gives a new CAS");
    assert!(r.ends_with(" X W\r\n") && (r.contains(" t30 ") || r.contains(" t29 ")), "{r}");
    assert_eq!(c.line(), "v1\r\n");
    assert_eq!(nocas(&c.cmd("mg s c\r\n")), "HD c# Z X\r\n");
    // A writer with an older CAS can store its value only as stale (I).
    assert_eq!(c.cmd(&format!("ms s 2 C{cas}\r\nv2\r\n")), "EX\r\n");
    assert_eq!(c.cmd(&format!("ms s 2 I C{cas}\r\nv2\r\n")), "HD\r\n");
    assert_eq!(c.cmd("mg s v\r\n"), "VA 2 Z X\r\n");
    assert_eq!(c.line(), "v2\r\n");
}

#[test]
fn ms_modes_flags_and_cas() {
    let (_s, mut c) = server();
    assert_eq!(c.cmd("ms a 1 ME\r\nx\r\n"), "HD\r\n");
    assert_eq!(c.cmd("ms a 1 ME c O1 k\r\nx\r\n"), "NS c0 O1 ka\r\n");
    assert_eq!(c.cmd("ms a 1 MA\r\ny\r\n"), "HD\r\n");
    assert_eq!(c.cmd("ms a 1 MP\r\nw\r\n"), "HD\r\n");
    assert_eq!(c.cmd("ms a 3 MR F9\r\nnew\r\n"), "HD\r\n");
    assert_eq!(c.cmd("ms nope 1 MR\r\nx\r\n"), "NS\r\n");
    assert_eq!(c.cmd("ms nope 1 MA\r\nx\r\n"), "NS\r\n");
    assert_eq!(c.cmd("ms a 3 MS\r\nset\r\n"), "HD\r\n");
    assert_eq!(c.cmd("mg a v f\r\n"), "VA 3 f0\r\n");
    assert_eq!(c.line(), "set\r\n");
    let cas = cas_of(&c.cmd("ms a 1 c\r\n1\r\n"));
    assert_eq!(c.cmd(&format!("ms a 1 C{}\r\n2\r\n", cas + 1)), "EX\r\n");
    assert_eq!(c.cmd(&format!("ms nope 1 C{cas}\r\n2\r\n")), "NF\r\n");
    let r = c.cmd(&format!("ms a 1 C{cas} c k\r\n2\r\n"));
    assert!(r.starts_with("HD c") && r.ends_with(" ka\r\n") && cas_of(&r) > cas, "{r}");
    // add ignores C; append checks it.
    assert_eq!(c.cmd(&format!("ms a 1 ME C{cas}\r\n2\r\n")), "NS\r\n");
    assert_eq!(c.cmd(&format!("ms a 1 MA C{cas}\r\n2\r\n")), "EX\r\n");
    // T: a negative exptime stores an already expired item.
    assert_eq!(c.cmd("ms x 1 T-1\r\nz\r\n"), "HD\r\n");
    assert_eq!(c.cmd("mg x v\r\n"), "EN\r\n");
    // A zero-length value.
    assert_eq!(c.cmd("ms e 0\r\n\r\n"), "HD\r\n");
    assert_eq!(c.cmd("mg e v\r\n"), "VA 0\r\n");
    assert_eq!(c.line(), "\r\n");
}

#[test]
fn base64_keys_b() {
    let (_s, mut c) = server();
    // "Zm9v" is "foo": the same item as the plain key.
    assert_eq!(c.cmd("ms Zm9v 3 b k\r\nbar\r\n"), "HD kZm9v b\r\n");
    assert_eq!(c.cmd("mg foo v\r\n"), "VA 3\r\n");
    assert_eq!(c.line(), "bar\r\n");
    assert_eq!(c.cmd("mg Zm9v b k v\r\n"), "VA 3 kZm9v b\r\n");
    assert_eq!(c.line(), "bar\r\n");
    assert_eq!(c.cmd("ma bg== b N0 J5 v k\r\n"), "VA 1 kbg== b\r\n");
    assert_eq!(c.line(), "5\r\n");
    assert_eq!(c.cmd("md bg== b k\r\n"), "HD kbg== b\r\n");
    assert_eq!(c.cmd("mg bg== b k\r\n"), "EN kbg== b\r\n");
    assert!(c.cmd("me Zm9v b\r\n").starts_with("ME Zm9v exp=-1 la="));
}

#[test]
fn md_flags() {
    let (_s, mut c) = server();
    assert_eq!(c.cmd("md nope\r\n"), "NF\r\n");
    assert_eq!(c.cmd("md nope q O5 k\r\n"), "NF O5 knope\r\n");
    let cas = cas_of(&c.cmd("ms d 1 c\r\nx\r\n"));
    assert_eq!(c.cmd(&format!("md d C{} O1\r\n", cas + 1)), "EX O1\r\n");
    assert_eq!(c.cmd(&format!("md d C{cas} O2 k\r\n")), "HD O2 kd\r\n");
    assert_eq!(c.cmd("mg d\r\n"), "EN\r\n");
    c.cmd("ms d 1\r\nx\r\n");
    c.send(b"md d q\r\nmn\r\n");
    assert_eq!(c.line(), "MN\r\n");
}

#[test]
fn ma_flags_and_modes() {
    let (_s, mut c) = server();
    assert_eq!(c.cmd("ma n\r\n"), "NF\r\n");
    assert_eq!(nocas(&c.cmd("ma n N0 J10 v c t\r\n")), "VA 2 c# t-1\r\n");
    assert_eq!(c.line(), "10\r\n");
    assert_eq!(c.cmd("ma n\r\n"), "HD\r\n");
    assert_eq!(c.cmd("ma n D5 MI v\r\n"), "VA 2\r\n");
    assert_eq!(c.line(), "16\r\n");
    assert_eq!(c.cmd("ma n D6 M+ v\r\n"), "VA 2\r\n");
    assert_eq!(c.line(), "22\r\n");
    assert_eq!(c.cmd("ma n D2 MD v\r\n"), "VA 2\r\n");
    assert_eq!(c.line(), "20\r\n");
    assert_eq!(c.cmd("ma n D100 M- v O7 k\r\n"), "VA 1 O7 kn\r\n");
    assert_eq!(c.line(), "0\r\n");
    let cas = cas_of(&c.cmd("ma n c\r\n"));
    assert_eq!(c.cmd(&format!("ma n C{} O3\r\n", cas + 1)), "EX O3\r\n");
    assert_eq!(c.cmd(&format!("ma n C{cas} v\r\n")), "VA 1\r\n");
    assert_eq!(c.line(), "2\r\n");
    // T sets a TTL; t reports it where it stands on the line.
    assert_eq!(c.cmd("ma n t T50\r\n"), "HD t-1\r\n");
    let r = c.cmd("ma n T60 t\r\n");
    assert!(r == "HD t60\r\n" || r == "HD t59\r\n", "{r}");
    assert_eq!(c.cmd("ma n2 J5 v N0 T100 t\r\n"), "VA 1 t100\r\n");
    assert_eq!(c.line(), "5\r\n");
    c.send(b"ma n q\r\nma nope q\r\n");
    assert_eq!(c.line(), "NF\r\n");
    c.cmd("ms s 3\r\nabc\r\n");
    assert_eq!(c.cmd("ma s\r\n"), "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
}

#[test]
fn me_reports_like_memcached() {
    let (_s, mut c) = server();
    assert_eq!(c.cmd("me nope\r\n"), "EN\r\n");
    c.cmd("ms s1 3\r\nbar\r\n");
    let r = c.cmd("me s1\r\n");
    assert!(r.starts_with("ME s1 exp=-1 la=") && r.ends_with(" fetch=no cls=1 size=64\r\n"), "{r}");
    c.cmd("ms s1 3 F1 T100\r\nbar\r\n");
    c.cmd("mg s1\r\n");
    let r = c.cmd("me s1\r\n");
    assert!(r.contains(" exp=-100 ") || r.contains(" exp=-99 "), "{r}");
    assert!(r.ends_with(" fetch=yes cls=1 size=68\r\n"), "{r}");
    assert_eq!(c.cmd("me\r\n"), "CLIENT_ERROR bad command line format\r\n");
}

#[test]
fn bad_input_client_errors_connection_survives() {
    let (_s, mut c) = server();
    c.cmd("ms keep 4\r\nsafe\r\n");
    let cases: &[(&str, &str)] = &[
        ("mg keep x\r\n", "CLIENT_ERROR invalid flag\r\n"),
        ("mg keep E5\r\n", "CLIENT_ERROR invalid flag\r\n"),
        ("mg keep v v\r\n", "CLIENT_ERROR duplicate flag\r\n"),
        ("mg keep Tx\r\n", "CLIENT_ERROR bad token in command line format\r\n"),
        ("mg keep N\r\n", "CLIENT_ERROR bad token in command line format\r\n"),
        ("mg foo b\r\n", "CLIENT_ERROR error decoding key\r\n"),
        ("mg keep O123456789012345678901234567890123\r\n", "CLIENT_ERROR opaque token too long\r\n"),
        ("mg keep a b c d e f g h i j k l m n o p q r s t\r\n", "CLIENT_ERROR options flags are too long\r\n"),
        ("md keep x\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n"),
        ("md keep q q\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n"),
        ("ma keep Dx\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n"),
        ("ma keep D-1\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n"),
        ("ma keep MX\r\n", "CLIENT_ERROR invalid mode for ma M token\r\n"),
        ("me Zm9 b\r\n", "CLIENT_ERROR bad command line format\r\n"),
        ("mg\r\n", "ERROR\r\n"),
        ("md\r\n", "ERROR\r\n"),
    ];
    for (req, want) in cases {
        assert_eq!(&c.cmd(req), want, "request {req:?}");
    }
    let long_key = "k".repeat(251);
    assert_eq!(c.cmd(&format!("mg {long_key} v\r\n")), "CLIENT_ERROR bad command line format\r\n");
    // ms errors once the length is known swallow the data block.
    let ms_cases: &[(&str, &str)] = &[
        ("ms keep 2 MX\r\nxx\r\n", "CLIENT_ERROR invalid mode for ms M token\r\n"),
        ("ms keep 2 MEE\r\nxx\r\n", "CLIENT_ERROR incorrect length for M token\r\n"),
        ("ms keep 2 T1x\r\nxx\r\n", "CLIENT_ERROR bad token in command line format\r\n"),
        ("ms keep 2 F-1\r\nxx\r\n", "CLIENT_ERROR bad command line format\r\n"),
        ("ms keep 2 C-1\r\nxx\r\n", "CLIENT_ERROR bad token in command line format\r\n"),
        ("ms keep 2 S\r\nxx\r\n", "CLIENT_ERROR invalid flag\r\n"),
        ("ms Zm9 2 b\r\nxx\r\n", "CLIENT_ERROR error decoding key\r\n"),
    ];
    for (req, want) in ms_cases {
        assert_eq!(&c.cmd(req), want, "request {req:?}");
        assert_eq!(c.cmd("mn\r\n"), "MN\r\n", "data of {req:?} swallowed");
    }
    // A bad length cannot be swallowed: the data line is read as a command.
    assert_eq!(c.cmd("ms keep bar\r\n"), "CLIENT_ERROR bad command line format\r\n");
    assert_eq!(c.cmd("ms keep -1\r\n"), "CLIENT_ERROR bad command line format\r\n");
    assert_eq!(c.cmd("ms keep\r\n"), "CLIENT_ERROR bad command line format\r\n");
    // Data not ending in \r\n.
    c.send(b"ms keep 2\r\nabc\r\n");
    assert_eq!(c.line(), "CLIENT_ERROR bad data chunk\r\n");
    assert_eq!(c.line(), "ERROR\r\n", "the stray \\n is an empty command");
    // Too large: refused, swallowed, and the old value dropped (memcached).
    c.cmd("ms big 3\r\nold\r\n");
    let big = vec![b'x'; 2 << 20];
    c.send(format!("ms big {}\r\n", big.len()).as_bytes());
    c.send(&big);
    c.send(b"\r\n");
    assert_eq!(c.line(), "SERVER_ERROR object too large for cache\r\n");
    assert_eq!(c.cmd("mg big v\r\n"), "EN\r\n");
    // Everything stored survived on this same connection.
    assert_eq!(c.cmd("mg keep v\r\n"), "VA 4\r\n");
    assert_eq!(c.line(), "safe\r\n");
}
