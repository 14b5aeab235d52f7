//! Text-protocol admin commands beyond memcached's: `replica promote` and
//! `replica follow URL`. (`stats replication` is a `stats` group.)

use super::Ctx;
use crate::replication::Url;

/// Handle `replica <subcommand> [args]` and return the whole reply line.
pub fn replica_command(args: &[&[u8]], ctx: &Ctx) -> String {
    let Some(repl) = ctx.rt.replication.get() else {
        return "SERVER_ERROR replication is not set up in this process\r\n".into();
    };
    match args {
        [b"promote"] => match repl.promote() {
            Ok(_) => "OK\r\n".into(),
            Err(e) => format!("SERVER_ERROR cannot promote: {e}\r\n"),
        },
        [b"follow", url] => {
            let url = match std::str::from_utf8(url).map_err(|_| "not UTF-8".to_string()).and_then(|u| u.parse::<Url>())
            {
                Ok(u) => u,
                Err(e) => return format!("CLIENT_ERROR {e}\r\n"),
            };
            match repl.follow(url) {
                Ok(()) => "OK\r\n".into(),
                Err(e) => format!("SERVER_ERROR {e}\r\n"),
            }
        }
        _ => "CLIENT_ERROR usage: replica promote | replica follow shm://NAME|rdma://HOST:PORT\r\n".into(),
    }
}
