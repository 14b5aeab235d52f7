use super::*;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;

fn tok(b: u8) -> AuthToken {
    AuthToken::new(&[b; 32]).unwrap()
}

/// Run the server handshake on one end of a loopback pair and the client's
/// on the other; both results.
fn pair(
    channel_s: Channel,
    ts: Option<AuthToken>,
    channel_c: Channel,
    tc: Option<AuthToken>,
) -> (Result<()>, Result<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        server_handshake(&mut s, channel_s, ts.as_ref())
    });
    let mut c = TcpStream::connect(addr).unwrap();
    let rc = client_handshake(&mut c, channel_c, tc.as_ref());
    drop(c);
    (t.join().unwrap(), rc)
}

#[test]
fn same_token_passes_both_ways() {
    let (s, c) = pair(Channel::Replication, Some(tok(7)), Channel::Replication, Some(tok(7)));
    s.unwrap();
    c.unwrap();
}

#[test]
fn no_token_on_either_side_goes_on_without_proofs() {
    let (s, c) = pair(Channel::RdmaClient, None, Channel::RdmaClient, None);
    s.unwrap();
    c.unwrap();
}

#[test]
fn a_wrong_token_fails_on_both_sides_and_the_client_never_proves() {
    let (s, c) = pair(Channel::Replication, Some(tok(7)), Channel::Replication, Some(tok(8)));
    let c = c.unwrap_err().to_string();
    assert!(c.contains("server's proof is wrong"), "{c}");
    // The client hung up instead of proving: the server has no proof to check.
    assert!(s.unwrap_err().to_string().contains("client's proof"));
}

#[test]
fn token_mismatch_in_presence_is_refused_with_a_reason() {
    let (s, c) = pair(Channel::Replication, Some(tok(7)), Channel::Replication, None);
    assert!(s.unwrap_err().to_string().contains("without a token"));
    assert!(c.unwrap_err().to_string().contains("requires a token"));
    // A replica with a token must not trust a primary that cannot prove itself.
    let (s, c) = pair(Channel::Replication, None, Channel::Replication, Some(tok(7)));
    assert!(s.is_err());
    assert!(c.unwrap_err().to_string().contains("cannot prove who it is"));
}

#[test]
fn a_proof_for_one_channel_does_not_open_the_other() {
    let (s, c) = pair(Channel::Replication, Some(tok(7)), Channel::RdmaClient, Some(tok(7)));
    assert!(s.is_err());
    assert!(c.unwrap_err().to_string().contains("not a RDMA client side channel"));
}

#[test]
fn proofs_are_bound_to_role_nonces_and_channel() {
    let t = tok(1);
    let (a, b) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
    let p = t.sign(Channel::Replication, ROLE_SERVER, &a, &b).unwrap();
    assert!(t.verify(Channel::Replication, ROLE_SERVER, &a, &b, &p));
    // Reflected (a server's proof offered as a client's), replayed with other
    // nonces, or for the other channel: all fail.
    assert!(!t.verify(Channel::Replication, ROLE_CLIENT, &a, &b, &p));
    assert!(!t.verify(Channel::Replication, ROLE_SERVER, &b, &a, &p));
    assert!(!t.verify(Channel::Replication, ROLE_SERVER, &a, &[3u8; NONCE_LEN], &p));
    assert!(!t.verify(Channel::RdmaClient, ROLE_SERVER, &a, &b, &p));
    assert!(!tok(2).verify(Channel::Replication, ROLE_SERVER, &a, &b, &p));
    assert!(!t.verify(Channel::Replication, ROLE_SERVER, &a, &b, &p[..31]), "a short proof");
}

#[test]
fn strangers_get_no_bytes_back() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        server_handshake(&mut s, Channel::Replication, Some(&tok(7)))
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(&[b'G'; HELLO_LEN]).unwrap();
    assert!(t.join().unwrap().is_err());
    let mut b = Vec::new();
    c.read_to_end(&mut b).unwrap();
    assert!(b.is_empty(), "a stranger was answered: {b:?}");
}

fn temp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lmc-auth-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn token_files_must_be_private_long_enough_and_regular() {
    let d = temp("files");
    let p = d.join("token");
    std::fs::write(&p, b"0123456789abcdef0123456789abcdef\n").unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = AuthToken::load(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains(&format!("{mode:04o}")), "{mode:o}: {e}");
    }
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let t = AuthToken::load(&p).unwrap();
    assert_eq!(&t.0[..], b"0123456789abcdef0123456789abcdef", "the trailing newline is dropped");
    // Never printed.
    assert!(!format!("{t:?}").contains("0123"), "{t:?}");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
    AuthToken::load(&p).unwrap();

    let short = d.join("short");
    std::fs::write(&short, b"secret\n").unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = AuthToken::load(&short).unwrap_err().to_string();
    assert!(e.contains("at least 16"), "{e}");
    assert!(!e.contains("secret"), "the token leaked into a message: {e}");
    let empty = d.join("empty");
    std::fs::write(&empty, b"").unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(AuthToken::load(&empty).is_err());

    let link = d.join("link");
    std::os::unix::fs::symlink(&p, &link).unwrap();
    assert!(AuthToken::load(&link).is_err(), "a symlink");
    assert!(AuthToken::load(&d).is_err(), "a directory");
    assert!(AuthToken::load(&d.join("missing")).is_err());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn exposure_beyond_loopback_needs_a_token_or_insecure() {
    check_exposure("x", "127.0.0.1", None, false).unwrap();
    check_exposure("x", "localhost", None, false).unwrap();
    check_exposure("x", "[::1]", None, false).unwrap();
    let e = check_exposure("--rdma-listen", "0.0.0.0", None, false).unwrap_err().to_string();
    assert!(e.contains("--auth-token-file") && e.contains("--insecure"), "{e}");
    assert!(check_exposure("x", "10.0.2.15", None, false).is_err());
    check_exposure("x", "0.0.0.0", None, true).unwrap();
    check_exposure("x", "0.0.0.0", Some(&tok(1)), false).unwrap();
}
